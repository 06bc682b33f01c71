"""A complete local cluster: control plane + a real node (kubelet + containerd) + SeaweedFS S3.

    python -m tests.support.cluster up      # start detached, print `export KUBECONFIG=...` and S3 settings
    python -m tests.support.cluster status  # print the same if it runs
    python -m tests.support.cluster down    # stop every process `up` started

`up` starts a supervisor process (`_serve`) that owns all components; its state (PIDs, endpoints) is
`<state dir>/state.json` (exports in `<state dir>/env.sh`), state dir
`${OCRJOB_CACHE:-~/.cache/ocrjob}/cluster-local` or --state-dir. Everything binds to 127.0.0.1 on ports
picked free at start, except the real node's kubelet (on the pod network gateway, realnode.py). `up` runs the
real node `ocrjob-node-0` (kubelet + containerd, 2 fake `nvidia.com/gpu` from a device plugin) with the base and
inference-cpu images imported; S3 is reachable from pods at $OCRJOB_S3_ENDPOINT_IN_CLUSTER.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes

from inference_pod.models import default_cache_dir
from ocrjob_operator.api import rbac
from ocrjob_operator.api.client import Client, load_config
from ocrjob_operator.api.phases import ConditionType
from tests.support import sample_job
from tests.support.controlplane import REPO, ControlPlane, control_plane_bin_dir, venv_tool
from tests.support.operator_deploy import deploy_operator, write_local_overlay
from tests.support.procs import alive, signal_group, spawn, stop_group, tail, wait_until
from tests.support.realnode import ImageArchive, RealNode, RealNodeSpec, real_gpu_node_spec

REAL_NODE_IMAGES = ("base",)  # imported into a real node besides pause (tests.support.images names)
UP_INFERENCE_IMAGE = "inference-cpu"  # what `up` imports besides REAL_NODE_IMAGES: shard pods run it


class LocalCluster:
    """Control plane plus (optionally) one real node; `stop()` is idempotent and stops everything `start()`
    began."""

    def __init__(self, workdir: Path, *, real_node: RealNodeSpec | None = None,
                 real_node_images: Iterable[str] = REAL_NODE_IMAGES, with_s3: bool = False, s3: Any = None,
                 bin_dir: Path | None = None, **control_plane_options: Any) -> None:
        """`with_s3` starts (and stops) a SeaweedFS of its own; `s3` is a running one (tests.support.seaweedfs)
        that the real node exposes to pods but that this cluster neither starts nor stops."""
        self.workdir = workdir
        self.control_plane = ControlPlane(workdir / "control-plane", bin_dir, **control_plane_options)
        self.real_node_spec = real_node
        self.real_node_images = tuple(real_node_images)
        self.real_node: RealNode | None = None
        self.with_s3 = with_s3 and s3 is None
        self.s3: Any = s3  # tests.support.seaweedfs.SeaweedFS, reachable from pods at s3_endpoint_in_cluster
        self.startup_seconds = 0.0
        self.image_refs: dict[str, str] = {}  # images imported into the real node: name -> ref
        self.exposed: list[int] = []  # 127.0.0.1 ports pods reach at <gateway>:<port>, on every real node started

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    def api_client(self) -> kubernetes.client.ApiClient:
        """A fresh cluster-admin ApiClient (not shared between threads: make one per thread)."""
        return self.control_plane.api_client()

    def client(self) -> Client:
        """A cluster-admin `Client` (the operator's and the CLI's client; safe to share between threads)."""
        return Client(load_config(str(self.kubeconfig), env={}).configuration)

    def start(self) -> LocalCluster:
        began = time.monotonic()
        try:
            if self.with_s3:
                from tests.support.seaweedfs import SeaweedFS

                # Not in a helper thread: children die with the *thread* that started them (pdeathsig).
                self.s3 = SeaweedFS.start(self.workdir / "s3")
            self.control_plane.start()
            if self.real_node_spec is not None:
                self._start_real_node(self.real_node_spec)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _start_real_node(self, spec: RealNodeSpec) -> None:
        from tests.support import images  # builds with buildah: only needed (and only imported) for a real node

        built = {name: images.ensure(name) for name in ("pause", *self.real_node_images)}
        self.image_refs = {name: image.ref for name, image in built.items()}
        archives = {name: ImageArchive(image.ref, image.archive) for name, image in built.items()}
        self.real_node = RealNode(self.control_plane, spec, self.workdir / "real-node", pause=archives.pop("pause"),
                                  images=tuple(archives.values()), bin_dir=self.control_plane.bin_dir)
        self._run_real_node()

    def real_node_image(self, name: str) -> str:
        """The reference of image `name` (tests.support.images) on the real node, built and imported if needed."""
        from tests.support import images

        assert self.real_node is not None, "no real node in this cluster"
        if name not in self.image_refs:
            image = images.ensure(name)
            self.real_node.add_image(ImageArchive(image.ref, image.archive))
            self.image_refs[name] = image.ref
        return self.image_refs[name]

    def _run_real_node(self) -> None:
        assert self.real_node is not None
        self.real_node.start()
        if self.s3 is not None and self.s3.ports["s3"] not in self.exposed:
            self.exposed.insert(0, self.s3.ports["s3"])
        for port in self.exposed:
            self.real_node.expose(port)

    def expose(self, port: int) -> str:
        """Make a 127.0.0.1 server reachable from pods, now and on a restarted node; its `http://` URL there."""
        assert self.real_node is not None, "no real node in this cluster"
        self.exposed.append(port)
        return f"http://{self.real_node.expose(port)}"

    def restart_real_node(self) -> RealNode:
        """Stop the real node (if running) and start a fresh one like it (new work dir, same images)."""
        old = self.real_node
        assert old is not None, "no real node in this cluster"
        old.stop()
        runs = len(list(self.workdir.glob("real-node*")))
        self.real_node = RealNode(self.control_plane, old.spec, self.workdir / f"real-node-{runs}", pause=old.pause,
                                  images=old.images, bin_dir=old.bin_dir)
        self._run_real_node()
        return self.real_node

    @property
    def s3_endpoint_in_cluster(self) -> str | None:
        """The S3 endpoint as pods on the real node reach it (http://<gateway>:<port>), if both run."""
        if self.s3 is None or self.real_node is None:
            return None
        return f"http://{self.real_node.gateway}:{self.s3.ports['s3']}"

    def stop(self) -> None:
        if self.real_node is not None:
            self.real_node.stop()  # needs the control plane: it deletes its pods first
        self.control_plane.stop()
        if self.with_s3 and self.s3 is not None:
            self.s3.stop()

    def logs(self, namespace: str | None = None) -> dict[str, Path]:
        """Component, node and pod logs (pods of `namespace` only, when given)."""
        logs = dict(self.control_plane.logs)
        if self.real_node is not None:
            logs.update({f"real-node {k}": v for k, v in self.real_node.logs.items()})
            logs.update({f"pod {k}": v for k, v in self.real_node.pod_logs(namespace).items()})
        if self.s3 is not None:
            logs["seaweedfs"] = self.s3.log_path
        return logs

    def pids(self) -> dict[str, int]:
        pids = dict(self.control_plane.pids())
        if self.s3 is not None:
            pids["seaweedfs"] = self.s3.pid
        if self.real_node is not None:
            pids.update(self.real_node.pids())
        return pids


def pod_log(core: kubernetes.client.CoreV1Api, namespace: str, name: str, **kwargs: Any) -> str:
    """`read_namespaced_pod_log` as text: kubernetes-client 36.0.0 returns the *repr* of the bytes
    ("b'...'", kubernetes-client/python#2596), so read the raw body and decode it ourselves."""
    resp = core.read_namespaced_pod_log(name, namespace, _preload_content=False, **kwargs)
    return resp.data.decode(errors="replace")


# -- `python -m tests.support.cluster up|down|status` ---------------------------------------------------------
def default_state_dir() -> Path:
    return default_cache_dir() / "cluster-local"


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _exports(state: dict[str, Any]) -> str:
    lines = [f"export KUBECONFIG={state['kubeconfig']}"]
    lines += [f"export {k}={v}" for k, v in state.get("s3_env", {}).items()]
    if state.get("s3_endpoint"):
        lines.append(f"export AWS_ENDPOINT_URL={state['s3_endpoint']}")  # boto3 reads this one itself
    if state.get("s3_endpoint_in_cluster"):
        lines.append(f"export OCRJOB_S3_ENDPOINT_IN_CLUSTER={state['s3_endpoint_in_cluster']}")
    if state.get("inference_image"):
        lines.append(f"export OCRJOB_INFERENCE_IMAGE={state['inference_image']}")
    return "\n".join(lines)


def _serve(state_dir: Path) -> int:
    """The supervisor: runs the cluster until SIGTERM/SIGINT, then stops it."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(state_dir, real_node=real_gpu_node_spec(), with_s3=True)
    cluster.start()
    sample: Path | None = None
    try:
        if cluster.real_node is not None:
            try:
                cluster.real_node_image(UP_INFERENCE_IMAGE)
            except Exception as exc:  # the cluster is still useful without it: say so and go on
                print(f"WARNING: image {UP_INFERENCE_IMAGE} not available ({type(exc).__name__}: {exc}); "
                      f"OCRJOB_INFERENCE_IMAGE is not exported", file=sys.stderr, flush=True)
            # As a user installs it: the manifests through a local overlay (image name and pull policy only).
            overlay = write_local_overlay(state_dir / "operator-overlay", cluster.real_node_image("operator"))
            deploy_operator(cluster.kubeconfig, overlay, venv_tool("kubectl"))
            print(f"operator deployed from {overlay} (kubectl apply -k)", flush=True)
            grant_secrets(cluster, sample_job.SAMPLE_NAMESPACE)
            inference = cluster.image_refs.get(UP_INFERENCE_IMAGE)
            if inference and cluster.s3 is not None and cluster.s3_endpoint_in_cluster:
                sample = sample_job.prepare(cluster.s3, cluster.s3_endpoint_in_cluster, inference, state_dir)
        state = {"pid": os.getpid(), "kubeconfig": str(cluster.kubeconfig), "s3_endpoint": cluster.s3.endpoint,
                 "s3_env": cluster.s3.env(), "pids": cluster.pids(), "startup_seconds": cluster.startup_seconds,
                 "s3_endpoint_in_cluster": cluster.s3_endpoint_in_cluster,
                 "inference_image": cluster.image_refs.get(UP_INFERENCE_IMAGE),
                 "sample_job": str(sample) if sample else None,
                 "logs": {k: str(v) for k, v in cluster.logs().items()}}
        (state_dir / "env.sh").write_text(_exports(state) + "\n")  # `source` it in a shell
        tmp = state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.rename(state_dir / "state.json")
        print(f"cluster ready in {cluster.startup_seconds:.1f}s", flush=True)
        stop.wait()
    finally:
        cluster.stop()
        (state_dir / "state.json").unlink(missing_ok=True)
        (state_dir / "env.sh").unlink(missing_ok=True)
    return 0


def _up(state_dir: Path, timeout: float) -> int:
    state = _read_state(state_dir)
    if state and alive(state["pid"]):
        print(f"cluster already running (supervisor pid {state['pid']})", file=sys.stderr)
        print(_exports(state))
        return 0
    began = time.monotonic()
    print("control-plane binaries: " + str(control_plane_bin_dir()), file=sys.stderr)  # builds when missing
    shutil.rmtree(state_dir, ignore_errors=True)  # a fresh cluster every time
    state_dir.mkdir(parents=True)
    log = state_dir / "supervisor.log"
    argv = [sys.executable, "-m", "tests.support.cluster", "_serve", "--state-dir", str(state_dir)]
    proc = spawn(argv, log, env=os.environ, cwd=REPO, die_with_parent=False)

    def ready() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise SystemExit(f"cluster failed to start (exit {proc.returncode}); {log}:\n{tail(log, 60)}")
        return _read_state(state_dir)

    try:
        state = wait_until(ready, timeout=timeout, interval=0.3, what="the local cluster")
    except TimeoutError:
        stop_group(proc, grace=30)
        raise
    print(f"cluster up in {time.monotonic() - began:.1f}s; logs in {state_dir}", file=sys.stderr)
    print(_exports(state))
    print(next_steps(state_dir, state), file=sys.stderr)
    return 0


def grant_secrets(cluster: LocalCluster, namespace: str) -> None:
    """What a namespace admin does before its OcrJobs may name its Secrets (`rbac.grant_command`)."""
    rbac_api = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    try:
        rbac_api.create_namespaced_role_binding(namespace, rbac.grant_secrets(namespace))
    except kubernetes.client.exceptions.ApiException as exc:
        if exc.status != 409:  # already granted (a restarted supervisor)
            raise


def next_steps(state_dir: Path, state: dict[str, Any]) -> str:
    """What a newcomer runs next, printed on the console (not only in the supervisor's log)."""
    bin_dir = Path(sys.executable).parent
    kubectl = os.path.relpath(bin_dir / "kubectl", Path.cwd())
    steps = [f"source {state_dir / 'env.sh'}", f"{kubectl} get nodes"]
    if state.get("sample_job"):
        in_sample = f"{kubectl} -n {sample_job.SAMPLE_NAMESPACE}"
        steps += [f"{kubectl} apply -f {state['sample_job']}",
                  f"{in_sample} wait --for=condition={ConditionType.SUCCEEDED} --timeout=300s "
                  f"ocrjob/{sample_job.SAMPLE_JOB}",
                  f"{in_sample} get ocr",
                  f"{os.path.relpath(bin_dir / 'ocrjob', Path.cwd())} results -n {sample_job.SAMPLE_NAMESPACE} "
                  f"{sample_job.SAMPLE_JOB}"]
    steps.append("make cluster-down")
    return "\nNext:\n" + "\n".join(f"  {step}" for step in steps)


def _down(state_dir: Path, timeout: float) -> int:
    state = _read_state(state_dir)
    if state is None:
        print("no local cluster state; nothing to stop", file=sys.stderr)
    else:
        pid = state["pid"]
        signal_group(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not alive(pid), timeout=timeout, what=f"supervisor {pid} to exit")
        except TimeoutError:
            signal_group(pid, signal.SIGKILL)
        for child in state.get("pids", {}).values():  # the supervisor normally stopped these already
            if alive(child):
                stop_group(child, grace=5)
    (state_dir / "state.json").unlink(missing_ok=True)
    _cleanup_real_node()
    print("local cluster stopped", file=sys.stderr)
    return 0


def _cleanup_real_node() -> None:
    """A supervisor that was SIGKILLed leaves its real node's host changes: undo them (a no-op otherwise)."""
    from tests.support import nodehost

    if nodehost.STATE_PATH.exists():
        try:
            nodehost.main(["cleanup"])
        except nodehost.RealNodeBusyError as exc:  # a live node of another session: not ours to touch
            print(exc, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "_serve"])
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds to wait for start/stop (a first `up` builds the images)")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "up":
        return _up(state_dir, args.timeout)
    if args.command == "down":
        return _down(state_dir, args.timeout)
    if args.command == "_serve":
        return _serve(state_dir)
    state = _read_state(state_dir)
    if state and alive(state["pid"]):
        print(_exports(state))
        return 0
    print("local cluster is not running", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
