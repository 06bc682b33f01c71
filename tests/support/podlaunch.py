"""Turns a pod's container into a local process (image mapping, environment, identity) and back.

Image mapping: `images` maps an image-name prefix to an `ImageEnv`; the longest matching prefix wins and
"" matches every image. Default (`DEFAULT_IMAGES`): every image runs with the repository's `.venv`, so
`command: ["python", "-m", "inference_pod"]` runs the venv's python with the repository root on PYTHONPATH.

Environment of a pod process, lowest precedence first:
  1. host variables named in PASSTHROUGH_ENV (nothing else of the host's environment leaks in);
  2. PATH=<image env>/bin:/usr/local/bin:/usr/bin:/bin, VIRTUAL_ENV=<image env>, PYTHONPATH=<repo root>,
     HOME=<poddir>, HOSTNAME=<pod name>, PYTHONUNBUFFERED=1;
  3. the container's `envFrom` then `env` (valueFrom: secretKeyRef, configMapKeyRef, fieldRef,
     resourceFieldRef; $(VAR) expansion), see podenv.py;
  4. set by the node (always win):
     KUBECONFIG=<poddir>/serviceaccount/kubeconfig: a TokenRequest token for the pod's ServiceAccount,
       bound to the pod; token, ca.crt and namespace lie next to it. KUBERNETES_SERVICE_HOST is not set,
       so in-cluster clients (kopf, kubernetes.config) fall back to KUBECONFIG.
     OCRJOB_TERMINATION_LOG=<poddir>/termination-log (<poddir>/termination-log-<container> when the pod
       has several containers) stands in for terminationMessagePath: what the process writes there
       becomes the terminated state's message (max 4096 bytes; FallbackToLogsOnError is honoured).
     NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES: the fake device indices allocated for the pod's
       `nvidia.com/gpu` limit, comma-separated like a device plugin ("void" and "" when it asks for none).
     OCRJOB_POD_DIR=<poddir> (also the working directory), OCRJOB_PROCESS_NODE=<node name>.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import kubernetes
from kubernetes.client.exceptions import ApiException

from tests.support.pki import write_kubeconfig
from tests.support.podenv import EnvError, EnvResolver, expand
from tests.support.podstate import ContainerRun, PodRun, now
from tests.support.procs import signal_group, spawn, tail

REPO = Path(__file__).resolve().parents[2]
MESSAGE_LIMIT = 4096  # the kubelet's cap on termination messages


@dataclass(frozen=True)
class ImageEnv:
    """A local stand-in for an image: `root/bin` goes first on PATH (a venv, or any prefix with bin/)."""

    root: Path
    entrypoint: tuple[str, ...] = ()  # used when a container gives no `command`


DEFAULT_IMAGES: Mapping[str, ImageEnv] = {"": ImageEnv(REPO / ".venv")}
PASSTHROUGH_ENV = ("LANG", "LC_ALL", "TZ", "OCRJOB_CACHE", "OCRJOB_MODELS_DIR",
                   "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "COVERAGE_PROCESS_START")


class Launcher:
    """Starts and reaps container processes for one node; every method runs on the node's worker thread."""

    def __init__(self, core: kubernetes.client.CoreV1Api, *, node_name: str, images: Mapping[str, ImageEnv],
                 passthrough_env: tuple[str, ...], ca_cert: Path, server: str, pids_dir: Path,
                 allocatable: Mapping[str, str]) -> None:
        self.core = core
        self.node_name = node_name
        self.images = images
        self.passthrough_env = passthrough_env
        self.ca_cert = ca_cert
        self.server = server
        self.pids_dir = pids_dir  # one file per live process group, so `cluster down` can clean up
        self.allocatable = allocatable

    def image_env(self, image: str) -> ImageEnv | None:
        matches = [prefix for prefix in self.images if image.startswith(prefix)]
        return self.images[max(matches, key=len)] if matches else None

    def start(self, run: PodRun, c: ContainerRun) -> list[str] | None:
        """Start the container; on a configuration problem leave it waiting (retried) or StartError."""
        meta = run.pod["metadata"]
        image = self.image_env(c.spec.get("image", ""))
        if image is None:
            c.waiting = ("ErrImagePull", f"no local environment mapped for image {c.spec.get('image')!r}")
            c.retry_at = time.monotonic() + 5
            return None
        env = {k: os.environ[k] for k in self.passthrough_env if k in os.environ}
        env.update(PATH=f"{image.root / 'bin'}:/usr/local/bin:/usr/bin:/bin", VIRTUAL_ENV=str(image.root),
                   PYTHONPATH=str(REPO), HOME=str(run.dir), HOSTNAME=meta["name"], PYTHONUNBUFFERED="1")
        try:
            env.update(EnvResolver(self.core, run.pod, self.allocatable).container_env(c.spec))
            env.update(self.service_account(run))
        except EnvError as exc:  # like the kubelet: CreateContainerConfigError, retried
            c.waiting, c.retry_at = ("CreateContainerConfigError", str(exc)), time.monotonic() + 1
            return None
        devices = ",".join(map(str, run.gpus))
        env.update(OCRJOB_TERMINATION_LOG=str(c.termination_log), OCRJOB_POD_DIR=str(run.dir),
                   OCRJOB_PROCESS_NODE=self.node_name, NVIDIA_VISIBLE_DEVICES=devices or "void",
                   CUDA_VISIBLE_DEVICES=devices)
        argv = [expand(a, env) for a in (c.spec.get("command") or image.entrypoint)]
        argv += [expand(a, env) for a in c.spec.get("args") or []]
        c.termination_log.write_text("")
        if not argv or not shutil.which(argv[0], path=env["PATH"]):
            what = argv[0] if argv else "<no command: give one, or an ImageEnv.entrypoint>"
            c.waiting = None
            c.terminated = {"exitCode": 128, "reason": "StartError", "startedAt": now(), "finishedAt": now(),
                            "message": f'exec: "{what}": executable file not found in $PATH'}
            return None
        c.proc = spawn(argv, c.log, env=env, cwd=run.dir)
        (self.pids_dir / str(c.proc.pid)).write_text(f"{meta['namespace']}/{meta['name']}/{c.name}")
        c.waiting, c.started_at, c.terminated, c.kill_reason = None, now(), None, None
        return argv

    def reap(self, c: ContainerRun) -> None:
        """Record an exited process as the container's terminated state."""
        assert c.proc is not None and c.proc.returncode is not None
        signal_group(c.proc.pid, signal.SIGKILL)  # like a runtime removing the cgroup: no stray children
        code = c.proc.returncode
        exit_code = 128 - code if code < 0 else code  # killed by signal N -> 128+N, like a runtime
        message = c.termination_log.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace") \
            if c.termination_log.exists() else ""
        if not message and exit_code and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = tail(c.log, 80)[-2048:]
        c.terminated = {"exitCode": exit_code, "reason": c.kill_reason or ("Completed" if exit_code == 0 else "Error"),
                        "startedAt": c.started_at, "finishedAt": now(), "containerID": f"process://{c.proc.pid}"}
        if message:
            c.terminated["message"] = message
        (self.pids_dir / str(c.proc.pid)).unlink(missing_ok=True)
        c.proc = None

    def service_account(self, run: PodRun) -> dict[str, str]:
        """Write token, ca.crt, namespace and a kubeconfig for the pod's ServiceAccount (once per pod)."""
        meta, spec = run.pod["metadata"], run.pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return {}
        sa_dir = run.dir / "serviceaccount"
        kubeconfig = sa_dir / "kubeconfig"
        if kubeconfig.exists():
            return {"KUBECONFIG": str(kubeconfig)}
        sa = spec.get("serviceAccountName") or "default"
        request = {"spec": {"audiences": [], "expirationSeconds": 86400, "boundObjectRef": {
            "apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}}}
        try:
            token = self.core.create_namespaced_service_account_token(sa, meta["namespace"], request).status.token
        except ApiException as exc:
            raise EnvError(f"cannot get a token for serviceaccount {sa}: {exc.reason}") from exc
        sa_dir.mkdir(exist_ok=True)
        (sa_dir / "token").write_text(token)
        (sa_dir / "namespace").write_text(meta["namespace"])
        shutil.copy(self.ca_cert, sa_dir / "ca.crt")
        write_kubeconfig(kubeconfig, server=self.server, ca=sa_dir / "ca.crt", token=token,
                         user=f"system:serviceaccount:{meta['namespace']}:{sa}", namespace=meta["namespace"])
        return {"KUBECONFIG": str(kubeconfig)}
