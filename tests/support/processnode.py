"""A "process node": a Kubernetes Node whose pods run as local processes instead of containers.

It behaves like a kubelet towards the real control plane: registers a Node (capacity, labels, taints),
keeps it Ready (node status + Lease heartbeats), runs every pod the real scheduler binds to it, reports
pod status (phase, conditions, containerStatuses), honours deletion grace periods and
activeDeadlineSeconds, and serves container logs over HTTPS (see kubelet_server.py).

Images map to local environments (see `ImageEnv` and `DEFAULT_IMAGES`); the process environment
conventions are documented on `ProcessNode`. Pods on this node must give an explicit `command` unless
their image mapping has an `entrypoint`. Not supported: initContainers, volumes (ignored), probes
(a running container is ready), exec/attach/port-forward.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from tests.support.kubelet_server import KubeletServer, LogSource
from tests.support.podenv import EnvError, EnvResolver, expand
from tests.support.procs import signal_group, spawn, tail, wait_until

if TYPE_CHECKING:
    from tests.support.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
GPU = "nvidia.com/gpu"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
MESSAGE_LIMIT = 4096  # the kubelet's cap on termination messages


@dataclass(frozen=True)
class ImageEnv:
    """A local stand-in for an image: `root/bin` goes first on PATH (a venv, or any prefix with bin/)."""

    root: Path
    entrypoint: tuple[str, ...] = ()  # used when a container gives no `command`


# Image-name prefix -> local environment; the longest matching prefix wins, "" matches every image.
# Default: every image runs with the repository's .venv, so `command: ["python", "-m", "inference_pod"]`
# runs the venv's python with the repository root on PYTHONPATH.
DEFAULT_IMAGES: Mapping[str, ImageEnv] = {"": ImageEnv(REPO / ".venv")}
# Host variables a pod process inherits (everything else comes from the pod spec, as in a container).
PASSTHROUGH_ENV = ("LANG", "LC_ALL", "TZ", "OCRJOB_CACHE", "OCRJOB_MODELS_DIR",
                   "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "COVERAGE_PROCESS_START")


@dataclass
class NodeSpec:
    name: str = "ocrjob-node-0"
    cpu: str = "8"
    memory: str = "16Gi"
    pods: int = 110
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)  # [{"key", "value", "effect"}]
    images: Mapping[str, ImageEnv] = field(default_factory=lambda: dict(DEFAULT_IMAGES))
    passthrough_env: tuple[str, ...] = PASSTHROUGH_ENV


def gpu_node_spec(name: str = "ocrjob-node-0", gpus: int = 2, **kw: Any) -> NodeSpec:
    """A node labelled like one running the NVIDIA GPU operator/device plugin."""
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "Fake-Process-GPU",
              "nvidia.com/gpu.count": str(gpus), **kw.pop("labels", {})}
    return NodeSpec(name=name, gpus=gpus, labels=labels, **kw)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Container:
    name: str
    spec: dict[str, Any]
    log: Path
    termination_log: Path
    proc: subprocess.Popen[bytes] | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    retry_at: float = 0.0
    started_at: str | None = None
    terminated: dict[str, Any] | None = None
    last_terminated: dict[str, Any] | None = None
    restart_count: int = 0
    kill_reason: str | None = None  # e.g. OOMKilled when a test simulates it


@dataclass
class _PodRun:
    pod: dict[str, Any]
    dir: Path
    containers: dict[str, _Container]
    gpus: list[int]
    started: float = field(default_factory=time.monotonic)
    start_time: str = field(default_factory=_now)
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    extra_conditions: list[dict[str, Any]] = field(default_factory=list)
    kill_at: float | None = None  # SIGKILL deadline once SIGTERM was sent
    terminating: bool = False
    done: bool = False
    deleted: bool = False
    reported: dict[str, Any] | None = None
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.pod["metadata"]["namespace"], self.pod["metadata"]["name"]

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])


class ProcessNode:
    """One node; several may run in one cluster. `start()` returns once the node is Ready and schedulable.

    Environment of every pod process (pod `env`/`envFrom` are applied on top of the first group):
      PATH=<image env>/bin:..., VIRTUAL_ENV, PYTHONPATH=<repo root>, HOME=<poddir>, HOSTNAME=<pod name>,
      PYTHONUNBUFFERED=1, plus the host's PASSTHROUGH_ENV variables.
      KUBECONFIG=<poddir>/serviceaccount/kubeconfig: the pod's ServiceAccount token (TokenRequest, bound to
        the pod); token, ca.crt, namespace sit next to it. KUBERNETES_SERVICE_HOST is NOT set, so in-cluster
        clients (kopf, kubernetes.config) fall back to KUBECONFIG.
      OCRJOB_TERMINATION_LOG=<poddir>/termination-log: stands in for terminationMessagePath (with several
        containers: <poddir>/termination-log-<container>); its content becomes the terminated message.
      NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES: the fake device indices allocated for
        `nvidia.com/gpu` limits, like a device plugin ("void" / "" when the pod asks for none).
      OCRJOB_POD_DIR=<poddir> (the working directory), OCRJOB_PROCESS_NODE=<node name>.
    """

    def __init__(self, control_plane: ControlPlane, spec: NodeSpec, workdir: Path | None = None) -> None:
        self.cp = control_plane
        self.spec = spec
        self.name = spec.name
        self.workdir = workdir or control_plane.workdir / "nodes" / spec.name
        self.log_file = self.workdir / "node.log"
        self.log = logging.getLogger(f"processnode.{spec.name}")
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._runs: dict[str, _PodRun] = {}
        self._logs: dict[tuple[str, str, str], LogSource] = {}
        self._dirs: dict[tuple[str, str], Path] = {}
        self._free_gpus = list(range(spec.gpus))
        self._server: KubeletServer | None = None
        self._started_at = _now()
        self.node_uid = ""

    # -- public API ------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> ProcessNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "pids").mkdir(exist_ok=True)
        handler = logging.FileHandler(self.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        tls = self.cp.pki.issue("kubelet-serving", "ocrjob-process-node", server=True)
        self._server = KubeletServer(tls, self.cp.pki.ca.cert, self._log_source).start()
        core = kubernetes.client.CoreV1Api(self.cp.api_client())
        self._register(core)
        for target in (self._heartbeat, self._watch, self._work):
            t = threading.Thread(target=target, name=f"{self.name}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        self.wait_ready(core, timeout)
        self.log.info("node %s ready (kubelet port %s)", self.name, self._server.port)
        return self

    def wait_ready(self, core: kubernetes.client.CoreV1Api, timeout: float = 60) -> None:
        """Ready=True and the node-lifecycle controller removed the not-ready taint (schedulable)."""

        def ready() -> bool:
            node = core.read_node(self.name)
            conds = {c.type: c.status for c in node.status.conditions or []}
            taints = {t.key for t in node.spec.taints or []}
            return conds.get("Ready") == "True" and NOT_READY_TAINT not in taints

        wait_until(ready, timeout=timeout, what=f"node {self.name} Ready and untainted")

    def stop(self, delete_node: bool = True) -> None:
        """Stop heartbeats and pod handling, SIGKILL every pod process group; idempotent."""
        self._halt()
        if delete_node:
            with contextlib.suppress(Exception):
                kubernetes.client.CoreV1Api(self.cp.api_client()).delete_node(self.name)

    def lose_node(self) -> None:
        """Simulate a crashed machine: heartbeats stop, processes die, nothing more is reported.

        The real node-lifecycle controller marks the node Ready=Unknown after --node-monitor-grace-period
        and taints it node.kubernetes.io/unreachable:NoExecute; pods are then deleted (condition
        DisruptionTarget, reason DeletionByTaintManager) once their toleration runs out (300 s by
        default via DefaultTolerationSeconds). Deletion never completes, as nobody confirms it: delete
        the Node (`stop()`) or force-delete the pods.
        """
        self._halt()

    def evict(self, namespace: str, name: str, message: str = "The node was low on resource: memory. ",
              timeout: float = 30) -> None:
        """Kubelet node-pressure eviction: kill the pod, phase Failed, reason Evicted, DisruptionTarget."""

        def do() -> None:
            run = self._find(namespace, name)
            run.reason, run.message, run.phase = "Evicted", message, "Failed"
            run.extra_conditions.append({"type": "DisruptionTarget", "status": "True",
                                         "reason": "TerminationByKubelet", "message": message})
            self._kill(run, signal.SIGKILL)
            self._finish(run, wait=True)

        self._call(do, timeout)

    def oom_kill(self, namespace: str, name: str, container: str | None = None, timeout: float = 30) -> None:
        """SIGKILL one container and report it terminated with reason OOMKilled (exit code 137)."""

        def do() -> None:
            run = self._find(namespace, name)
            c = run.containers[container] if container else next(iter(run.containers.values()))
            if c.proc and c.proc.poll() is None:
                c.kill_reason = "OOMKilled"
                signal_group(c.proc.pid, signal.SIGKILL)
                c.proc.wait(timeout=10)
            self._sync(run)

        self._call(do, timeout)

    def pod_dir(self, namespace: str, name: str) -> Path:
        """The working directory of the latest pod with that name on this node."""
        return self._dirs[namespace, name]

    def pod_logs(self, namespace: str | None = None) -> dict[str, Path]:
        """`ns/pod/container` -> log file, for failure reports."""
        return {"/".join(k): src.path for k, src in list(self._logs.items()) if namespace in (None, k[0])}

    # -- registration and heartbeats ---------------------------------------------------------------
    def _node_status(self) -> dict[str, Any]:
        resources = {"cpu": self.spec.cpu, "memory": self.spec.memory, "pods": str(self.spec.pods),
                     "ephemeral-storage": "100Gi"}
        if self.spec.gpus:
            resources[GPU] = str(self.spec.gpus)
        now = _now()
        conds = [("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                 ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                 ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                 ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
        assert self._server is not None
        return {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": now,
                            "lastTransitionTime": self._started_at} for t, s, r, m in conds],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self._server.port}},
            "nodeInfo": {"machineID": self.name, "systemUUID": self.name, "bootID": self._started_at,
                         "kernelVersion": os.uname().release, "osImage": "ocrjob process node",
                         "containerRuntimeVersion": "process://1", "kubeletVersion": "v1.37.2",
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }

    def _register(self, core: kubernetes.client.CoreV1Api) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "ocrjob.dev/process-node": "true", **self.spec.labels}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels},
                "spec": {"taints": self.spec.taints}}
        try:
            node = core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            node = core.patch_node(self.name, body)  # left over from an earlier run of this node
        self.node_uid = node.metadata.uid
        core.patch_node_status(self.name, {"status": self._node_status()})
        self._renew_lease(kubernetes.client.CoordinationV1Api(core.api_client))

    def _renew_lease(self, coord: kubernetes.client.CoordinationV1Api) -> None:
        try:
            coord.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": {"renewTime": _micro_now()}})
        except ApiException as exc:
            if exc.status != 404:
                raise
            coord.create_namespaced_lease("kube-node-lease", {
                "metadata": {"name": self.name, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.node_uid}]},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}})

    def _heartbeat(self) -> None:
        api = self.cp.api_client()
        core, coord = kubernetes.client.CoreV1Api(api), kubernetes.client.CoordinationV1Api(api)
        last_status = time.monotonic()
        while not self._stop.wait(2.0):  # lease every 2 s; node-monitor-grace-period is 15 s
            try:
                self._renew_lease(coord)
                if time.monotonic() - last_status > 10:
                    core.patch_node_status(self.name, {"status": self._node_status()})
                    last_status = time.monotonic()
            except Exception:
                self.log.exception("heartbeat failed")

    # -- watching pods -----------------------------------------------------------------------------
    def _watch(self) -> None:
        core = kubernetes.client.CoreV1Api(self.cp.api_client())
        selector = f"spec.nodeName={self.name}"
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    resp = core.list_pod_for_all_namespaces(field_selector=selector, _preload_content=False,
                                                            _request_timeout=30)
                    listing = json.loads(resp.data)
                    rv = listing["metadata"]["resourceVersion"]
                    self._queue.put(("relist", listing["items"]))
                w = kubernetes.watch.Watch()
                for ev in w.stream(core.list_pod_for_all_namespaces, field_selector=selector,
                                   resource_version=rv, timeout_seconds=5, allow_watch_bookmarks=True,
                                   _request_timeout=30):
                    raw = ev["raw_object"]
                    rv = raw["metadata"]["resourceVersion"]
                    if ev["type"] != "BOOKMARK":
                        self._queue.put(("event", ev["type"], raw))
                    if self._stop.is_set():
                        w.stop()
            except ApiException as exc:
                if exc.status == 410:  # resourceVersion too old: list again
                    rv = None
                elif not self._stop.is_set():
                    self.log.warning("pod watch failed: %s", exc)
                    self._stop.wait(1)
            except Exception:
                if not self._stop.is_set():
                    self.log.exception("pod watch failed")
                    rv = None
                    self._stop.wait(1)

    # -- the worker: owns all pod state -----------------------------------------------------------
    def _work(self) -> None:
        self._core = kubernetes.client.CoreV1Api(self.cp.api_client())
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                item = None
            try:
                if item and item[0] == "call":
                    self._run_call(item[1], item[2])
                elif item and item[0] == "relist":
                    self._relist(item[1])
                elif item:
                    self._on_event(item[1], item[2])
                for run in list(self._runs.values()):
                    self._sync(run)
            except Exception:
                self.log.exception("pod worker error")

    def _run_call(self, fn: Callable[[], None], fut: concurrent.futures.Future[None]) -> None:
        try:
            fn()
            fut.set_result(None)
        except Exception as exc:
            fut.set_exception(exc)

    def _call(self, fn: Callable[[], None], timeout: float) -> None:
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put(("call", fn, fut))
        fut.result(timeout=timeout)

    def _find(self, namespace: str, name: str) -> _PodRun:
        for run in self._runs.values():
            if run.key == (namespace, name) and not run.deleted and not run.done:
                return run
        raise LookupError(f"pod {namespace}/{name} is not running on node {self.name}")

    def _relist(self, pods: list[dict[str, Any]]) -> None:
        present = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self._runs if u not in present]:
            self._drop(self._runs[uid])
        for pod in pods:
            self._on_event("MODIFIED", pod)

    def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        run = self._runs.get(uid)
        if kind == "DELETED":
            if run:
                self._drop(run)
            return
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        if run is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or deleting:
                if deleting:  # finished or never started here: nothing to stop, confirm the deletion
                    self._delete_pod(pod)
                return
            run = self._admit(pod)
        run.pod = pod
        if deleting and not run.terminating:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            self._terminate(run, 30 if grace is None else int(grace))

    def _admit(self, pod: dict[str, Any]) -> _PodRun:
        meta, spec = pod["metadata"], pod["spec"]
        pod_dir = self.workdir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        names = [c["name"] for c in spec["containers"]]
        containers = {
            c["name"]: _Container(c["name"], c, pod_dir / f"{c['name']}.log",
                                  pod_dir / ("termination-log" if len(names) == 1 else f"termination-log-{c['name']}"))
            for c in spec["containers"]}
        wanted = sum(int((c.get("resources") or {}).get("limits", {}).get(GPU, 0)) for c in spec["containers"])
        run = _PodRun(pod, pod_dir, containers, gpus=[])
        self._runs[meta["uid"]] = run
        self._dirs[meta["namespace"], meta["name"]] = pod_dir
        for c in containers.values():
            self._logs[meta["namespace"], meta["name"], c.name] = LogSource(
                c.log, lambda c=c, run=run: not run.done and c.terminated is None)
        self.log.info("admitting pod %s/%s (%s)", meta["namespace"], meta["name"], meta["uid"])
        if spec.get("initContainers"):
            self._reject(run, "UnsupportedPodSpec", "process nodes do not run initContainers")
        elif wanted > len(self._free_gpus):
            self._reject(run, "UnexpectedAdmissionError",
                         f"Allocate failed due to requested number of devices unavailable for {GPU}. "
                         f"Requested: {wanted}, Available: {len(self._free_gpus)}")
        else:
            run.gpus, self._free_gpus = self._free_gpus[:wanted], self._free_gpus[wanted:]
        return run

    def _reject(self, run: _PodRun, reason: str, message: str) -> None:
        run.phase, run.reason, run.message, run.done = "Failed", reason, message, True
        for c in run.containers.values():
            c.waiting = None
            c.terminated = {"exitCode": 128, "reason": "StartError", "message": message}

    # -- container processes -------------------------------------------------------------------------
    def _service_account(self, run: _PodRun) -> dict[str, str]:
        """Write token/ca.crt/namespace/kubeconfig for the pod's ServiceAccount; the env pointing at them."""
        meta, spec = run.pod["metadata"], run.pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return {}
        sa_dir = run.dir / "serviceaccount"
        kubeconfig = sa_dir / "kubeconfig"
        if not kubeconfig.exists():
            sa = spec.get("serviceAccountName") or "default"
            try:
                token = self._core.create_namespaced_service_account_token(sa, meta["namespace"], {
                    "spec": {"audiences": [], "expirationSeconds": 86400, "boundObjectRef": {
                        "apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}}}).status.token
            except ApiException as exc:
                raise EnvError(f"cannot get a token for serviceaccount {sa}: {exc.reason}") from exc
            from tests.support.pki import write_kubeconfig

            sa_dir.mkdir(exist_ok=True)
            (sa_dir / "token").write_text(token)
            (sa_dir / "namespace").write_text(meta["namespace"])
            shutil.copy(self.cp.pki.ca.cert, sa_dir / "ca.crt")
            write_kubeconfig(kubeconfig, server=self.cp.server, ca=sa_dir / "ca.crt",
                             user=f"system:serviceaccount:{meta['namespace']}:{sa}", token=token,
                             namespace=meta["namespace"])
        return {"KUBECONFIG": str(kubeconfig)}

    def _image_env(self, image: str) -> ImageEnv | None:
        matches = [prefix for prefix in self.spec.images if image.startswith(prefix)]
        return self.spec.images[max(matches, key=len)] if matches else None

    def _start(self, run: _PodRun, c: _Container) -> None:
        meta = run.pod["metadata"]
        image = self._image_env(c.spec.get("image", ""))
        if image is None:
            c.waiting, c.retry_at = ("ErrImagePull", f"no local environment mapped for image "
                                                      f"{c.spec.get('image')!r}"), time.monotonic() + 5
            return
        env = {k: os.environ[k] for k in self.spec.passthrough_env if k in os.environ}
        env.update(PATH=f"{image.root / 'bin'}:/usr/local/bin:/usr/bin:/bin", VIRTUAL_ENV=str(image.root),
                   PYTHONPATH=str(REPO), HOME=str(run.dir), HOSTNAME=meta["name"], PYTHONUNBUFFERED="1")
        try:
            allocatable = self._node_status()["allocatable"]
            env.update(EnvResolver(self._core, run.pod, allocatable).container_env(c.spec))
            env.update(self._service_account(run))
        except EnvError as exc:
            c.waiting, c.retry_at = ("CreateContainerConfigError", str(exc)), time.monotonic() + 1
            return
        devices = ",".join(map(str, run.gpus))
        env.update(OCRJOB_TERMINATION_LOG=str(c.termination_log), OCRJOB_POD_DIR=str(run.dir),
                   OCRJOB_PROCESS_NODE=self.name, NVIDIA_VISIBLE_DEVICES=devices or "void",
                   CUDA_VISIBLE_DEVICES=devices)
        command = [expand(a, env) for a in c.spec.get("command") or image.entrypoint]
        argv = command + [expand(a, env) for a in c.spec.get("args") or []]
        c.termination_log.write_text("")
        if not argv or not shutil.which(argv[0], path=env["PATH"]):
            what = argv[0] if argv else "<no command; give one or an ImageEnv.entrypoint>"
            c.waiting = None
            c.terminated = {"exitCode": 128, "reason": "StartError", "startedAt": _now(), "finishedAt": _now(),
                            "message": f'exec: "{what}": executable file not found in $PATH'}
            return
        c.proc = spawn(argv, c.log, env=env, cwd=run.dir)
        (self.workdir / "pids" / str(c.proc.pid)).write_text(f"{meta['namespace']}/{meta['name']}/{c.name}")
        c.waiting, c.started_at, c.terminated, c.kill_reason = None, _now(), None, None
        self.log.info("started %s/%s/%s pid %s: %s", *run.key, c.name, c.proc.pid, argv)

    def _reap(self, c: _Container) -> None:
        """Record a finished process as a terminated container state."""
        assert c.proc is not None
        signal_group(c.proc.pid, signal.SIGKILL)  # like a runtime killing the cgroup: no stray children
        code = c.proc.returncode
        exit_code = 128 - code if code < 0 else code  # killed by signal N -> 128+N, like a runtime
        message = c.termination_log.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace") \
            if c.termination_log.exists() else ""
        if not message and exit_code and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = tail(c.log, 80)[-2048:]
        reason = c.kill_reason or ("Completed" if exit_code == 0 else "Error")
        c.terminated = {"exitCode": exit_code, "reason": reason, "startedAt": c.started_at,
                        "finishedAt": _now(), "containerID": f"process://{c.proc.pid}"}
        if message:
            c.terminated["message"] = message
        (self.workdir / "pids" / str(c.proc.pid)).unlink(missing_ok=True)
        c.proc = None

    def _kill(self, run: _PodRun, sig: int) -> None:
        for c in run.containers.values():
            if c.proc and c.proc.poll() is None:
                signal_group(c.proc.pid, sig)
            if c.waiting and not c.proc:  # never started (or backing off): it will not start any more
                c.waiting = None
                c.terminated = c.terminated or {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                                "message": "The container could not be located when the pod "
                                                           "was terminated"}

    def _terminate(self, run: _PodRun, grace: int) -> None:
        run.terminating = True
        run.kill_at = time.monotonic() + grace
        self.log.info("terminating %s/%s, grace %ss", *run.key, grace)
        self._kill(run, signal.SIGTERM if grace > 0 else signal.SIGKILL)

    def _finish(self, run: _PodRun, wait: bool = False) -> None:
        for c in run.containers.values():
            if c.proc and (wait or c.proc.poll() is not None):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(timeout=10)
                self._reap(c)
        self._sync(run)

    # -- the per-pod state machine ------------------------------------------------------------------
    def _sync(self, run: _PodRun) -> None:
        if run.deleted or (run.done and run.reported and not run.pod["metadata"].get("deletionTimestamp")):
            return  # finished and reported: nothing changes until the pod is deleted
        now = time.monotonic()
        policy = run.pod["spec"].get("restartPolicy", "Always")
        if not run.done:
            for c in run.containers.values():
                if c.proc and c.proc.poll() is not None:
                    self._reap(c)
                failed = c.terminated is not None and c.terminated["exitCode"] != 0
                restart = policy == "Always" or (policy == "OnFailure" and failed)
                if c.terminated and restart and not run.terminating and c.terminated.get("reason") != "StartError":
                    c.last_terminated, c.terminated = c.terminated, None
                    c.restart_count += 1
                    c.waiting, c.retry_at = ("CrashLoopBackOff", "back-off restarting failed container"), now + 1
                if c.waiting and not run.terminating and now >= c.retry_at:
                    self._start(run, c)
            deadline = run.pod["spec"].get("activeDeadlineSeconds")
            if deadline is not None and not run.terminating and now - run.started > int(deadline):
                run.phase, run.reason = "Failed", "DeadlineExceeded"
                run.message = "Pod was active on the node longer than the specified deadline"
                self._terminate(run, int(run.pod["spec"].get("terminationGracePeriodSeconds", 30)))
            if run.terminating and run.kill_at is not None and now >= run.kill_at:
                self._kill(run, signal.SIGKILL)
            if all(c.terminated for c in run.containers.values()):
                ok = all(c.terminated and c.terminated["exitCode"] == 0 for c in run.containers.values())
                run.phase = "Failed" if run.reason else ("Succeeded" if ok else "Failed")
                run.done = True
                self._free_gpus = sorted(self._free_gpus + run.gpus)
                run.gpus = []
            elif any(c.proc for c in run.containers.values()):
                run.phase = "Running" if not run.reason else run.phase
        self._report(run)
        if run.done and run.pod["metadata"].get("deletionTimestamp"):
            self._delete_pod(run.pod)
            run.deleted = True

    def _status(self, run: _PodRun) -> dict[str, Any]:
        statuses = []
        for c in run.containers.values():
            state: dict[str, Any] = {"waiting": None, "running": None, "terminated": None}
            if c.terminated:
                state["terminated"] = c.terminated
            elif c.proc:
                state["running"] = {"startedAt": c.started_at}
            else:
                reason, message = c.waiting or ("ContainerCreating", "")
                state["waiting"] = {"reason": reason, **({"message": message} if message else {})}
            statuses.append({
                "name": c.name, "image": c.spec.get("image", ""), "imageID": "", "ready": bool(c.proc),
                "started": bool(c.proc), "restartCount": c.restart_count, "state": state,
                "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
                **({"containerID": f"process://{c.proc.pid}"} if c.proc else {})})
        ready = run.phase == "Running" and all(c.proc for c in run.containers.values())
        not_ready_reason = "PodCompleted" if run.done else "ContainersNotReady"
        conds = [("PodReadyToStartContainers", not run.done, None), ("Initialized", True, None),
                 ("ContainersReady", ready, None if ready else not_ready_reason),
                 ("Ready", ready, None if ready else not_ready_reason)]
        conditions = [self._condition(run, t, ok, reason) for t, ok, reason in conds]
        conditions += [{**c, "lastTransitionTime": self._transition(run, c["type"], c["status"])}
                       for c in run.extra_conditions]
        status: dict[str, Any] = {
            "phase": run.phase, "conditions": conditions, "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.start_time, "containerStatuses": statuses,
            "reason": run.reason, "message": run.message}
        return status

    def _condition(self, run: _PodRun, kind: str, ok: bool, reason: str | None) -> dict[str, Any]:
        status = "True" if ok else "False"
        cond = {"type": kind, "status": status, "lastProbeTime": None,
                "lastTransitionTime": self._transition(run, kind, status)}
        if reason:
            cond["reason"] = reason
        return cond

    @staticmethod
    def _transition(run: _PodRun, kind: str, status: str) -> str:
        previous = run.transitions.get(kind)
        if previous is None or previous[0] != status:
            run.transitions[kind] = (status, _now())
        return run.transitions[kind][1]

    def _report(self, run: _PodRun) -> None:
        status = self._status(run)
        if status == run.reported:
            return
        ns, name = run.key
        try:
            self._core.patch_namespaced_pod_status(name, ns, {"status": status})
            run.reported = status
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._drop(run)  # deleted behind our back (force deletion)

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        """Confirm a graceful deletion like the kubelet: delete with grace 0, only this incarnation (uid)."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self._core.delete_namespaced_pod(meta["name"], meta["namespace"], body=body, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _drop(self, run: _PodRun) -> None:
        """The pod object is gone: kill whatever still runs and forget it (nothing left to report to)."""
        self._kill(run, signal.SIGKILL)
        for c in run.containers.values():
            if c.proc:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(timeout=10)
                self._reap(c)
        if run.gpus:
            self._free_gpus = sorted(self._free_gpus + run.gpus)
            run.gpus = []
        run.deleted = True
        self._runs.pop(run.uid, None)
        for key in [k for k, src in self._logs.items() if k[:2] == run.key and src.path.parent == run.dir]:
            del self._logs[key]

    def _log_source(self, namespace: str, pod: str, container: str) -> LogSource | None:
        return self._logs.get((namespace, pod, container))

    def _halt(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        self._threads.clear()
        for run in list(self._runs.values()):
            for c in run.containers.values():
                if c.proc:
                    signal_group(c.proc.pid, signal.SIGKILL)  # the whole group: children die too
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        c.proc.wait(timeout=10)
                    (self.workdir / "pids" / str(c.proc.pid)).unlink(missing_ok=True)
        if self._server:
            self._server.stop()
            self._server = None
