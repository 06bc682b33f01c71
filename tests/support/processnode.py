"""A "process node": a Kubernetes Node whose pods run as local processes instead of containers.

Towards the real control plane it behaves like a kubelet: registers a Node (capacity incl.
`nvidia.com/gpu`, labels, taints), keeps it Ready (node status + Lease in kube-node-lease), runs every
pod the real scheduler binds to it (watch with fieldSelector spec.nodeName), reports pod status, honours
deletion grace periods (SIGTERM, SIGKILL after the grace period, then delete with grace 0) and
activeDeadlineSeconds, and serves container logs over HTTPS (kubelet_server.py).
Image mapping and the process environment: podlaunch.py. Pod status: podstate.py.

Not supported: initContainers (the pod fails), volumes (ignored), probes (running means ready),
exec/attach/port-forward. restartPolicy OnFailure/Always restart the process after 1 s.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import queue
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
from tests.support.podlaunch import DEFAULT_IMAGES, PASSTHROUGH_ENV, ImageEnv, Launcher
from tests.support.podstate import ContainerRun, PodRun, micro_now, now, pod_status
from tests.support.procs import signal_group, wait_until

if TYPE_CHECKING:
    from tests.support.controlplane import ControlPlane

GPU = "nvidia.com/gpu"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
LEASE_RENEW_SECONDS = 2.0  # well inside the control plane's --node-monitor-grace-period (15 s)
STATUS_REPORT_SECONDS = 10.0


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
    """A node labelled like one running the NVIDIA GPU operator / device plugin."""
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "Fake-Process-GPU",
              "nvidia.com/gpu.count": str(gpus), **kw.pop("labels", {})}
    return NodeSpec(name=name, gpus=gpus, labels=labels, **kw)


class ProcessNode:
    """One node; several may run in one cluster. `start()` returns once it is Ready and schedulable.

    All pod state is owned by one worker thread; the watch thread and the public methods hand it work
    through a queue, so no locks are needed.
    """

    def __init__(self, control_plane: ControlPlane, spec: NodeSpec, workdir: Path | None = None) -> None:
        self.cp = control_plane
        self.spec = spec
        self.name = spec.name
        self.workdir = workdir or control_plane.workdir / "nodes" / spec.name
        self.log_file = self.workdir / "node.log"
        self.log = logging.getLogger(f"processnode.{spec.name}")
        self.node_uid = ""
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._runs: dict[str, PodRun] = {}  # by pod uid
        self._logs: dict[tuple[str, str, str], LogSource] = {}  # read by the kubelet server's threads
        self._dirs: dict[tuple[str, str], Path] = {}
        self._free_gpus = list(range(spec.gpus))
        self._server: KubeletServer | None = None
        self._log_handler: logging.Handler | None = None
        self._started_at = now()
        resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.pods), "ephemeral-storage": "100Gi"}
        self.resources = {**resources, **({GPU: str(spec.gpus)} if spec.gpus else {})}

    # -- public API ------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> ProcessNode:
        (self.workdir / "pids").mkdir(parents=True, exist_ok=True)
        self._log_handler = logging.FileHandler(self.log_file)
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(self._log_handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        tls = self.cp.pki.issue("kubelet-serving", "ocrjob-process-node", server=True)
        self._server = KubeletServer(tls, self.cp.pki.ca.cert, lambda *key: self._logs.get(key)).start()
        core = kubernetes.client.CoreV1Api(self.cp.api_client())
        self._register(core)
        for target in (self._heartbeat, self._watch, self._work):
            thread = threading.Thread(target=target, name=f"{self.name}{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.wait_ready(core, timeout)
        self.log.info("node %s ready (kubelet port %s)", self.name, self._server.port)
        return self

    def wait_ready(self, core: kubernetes.client.CoreV1Api, timeout: float = 60) -> None:
        """Ready=True and the node-lifecycle controller removed the not-ready taint (schedulable)."""

        def ready() -> bool:
            node = core.read_node(self.name)
            conditions = {c.type: c.status for c in node.status.conditions or []}
            return conditions.get("Ready") == "True" and NOT_READY_TAINT not in {
                t.key for t in node.spec.taints or []}

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
        and taints it node.kubernetes.io/unreachable:NoExecute; the taint-eviction controller deletes its
        pods (condition DisruptionTarget, reason DeletionByTaintManager) once their toleration runs out
        (300 s by default through DefaultTolerationSeconds). Only with another node still Ready: when
        every node is down the controller stops evicting. The deletion never completes since nobody
        confirms it: delete the Node (`stop()`) or force-delete the pods.
        """
        self._halt()

    def evict(self, namespace: str, name: str, message: str = "The node was low on resource: memory. ",
              timeout: float = 30) -> None:
        """Kubelet node-pressure eviction: SIGKILL, phase Failed, reason Evicted, DisruptionTarget condition
        (reason TerminationByKubelet). The pod object stays, as with a real kubelet."""

        def evict() -> None:
            run = self._find(namespace, name)
            run.reason, run.message, run.phase = "Evicted", message, "Failed"
            run.extra_conditions.append({"type": "DisruptionTarget", "status": "True",
                                         "reason": "TerminationByKubelet", "message": message})
            self._kill(run, signal.SIGKILL)
            self._reap_all(run, wait=True)
            self._sync(run)

        self._call(evict, timeout)

    def oom_kill(self, namespace: str, name: str, container: str | None = None, timeout: float = 30) -> None:
        """SIGKILL one container; it is reported terminated with reason OOMKilled, exit code 137."""

        def oom_kill() -> None:
            run = self._find(namespace, name)
            c = run.containers[container] if container else next(iter(run.containers.values()))
            if c.proc and c.proc.poll() is None:
                c.kill_reason = "OOMKilled"
                signal_group(c.proc.pid, signal.SIGKILL)
                c.proc.wait(timeout=10)
            self._sync(run)

        self._call(oom_kill, timeout)

    def sigkill(self, namespace: str, name: str, container: str | None = None, timeout: float = 30) -> None:
        """SIGKILL one container's processes, as `kill -9` on the node would: reported exit code 137, reason
        Error (not OOMKilled)."""

        def sigkill() -> None:
            run = self._find(namespace, name)
            c = run.containers[container] if container else next(iter(run.containers.values()))
            if c.proc and c.proc.poll() is None:
                signal_group(c.proc.pid, signal.SIGKILL)
                c.proc.wait(timeout=10)
            self._sync(run)

        self._call(sigkill, timeout)

    def pod_dir(self, namespace: str, name: str) -> Path:
        """The working directory of the latest pod with that name on this node."""
        return self._dirs[namespace, name]

    def pod_logs(self, namespace: str | None = None) -> dict[str, Path]:
        """`ns/pod/container` -> log file (for failure reports)."""
        return {"/".join(k): src.path for k, src in list(self._logs.items()) if namespace in (None, k[0])}

    # -- registration and heartbeats -----------------------------------------------------------------
    def _node_status(self) -> dict[str, Any]:
        assert self._server is not None
        heartbeat = now()
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
        return {
            "capacity": self.resources, "allocatable": self.resources,
            "conditions": [{"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": heartbeat,
                            "lastTransitionTime": self._started_at} for t, s, r, m in conditions],
            # The apiserver reaches our kubelet endpoint through InternalIP (--kubelet-preferred-address-types).
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self._server.port}},
            "nodeInfo": {"machineID": self.name, "systemUUID": self.name, "bootID": self._started_at,
                         "kernelVersion": os.uname().release, "osImage": "ocrjob process node",
                         "containerRuntimeVersion": "process://1", "kubeletVersion": "v1.37.2",
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }

    def _register(self, core: kubernetes.client.CoreV1Api) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "ocrjob.dev/process-node": "true", **self.spec.labels}
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
            coord.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": {"renewTime": micro_now()}})
        except ApiException as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.node_uid}
            coord.create_namespaced_lease("kube-node-lease", {
                "metadata": {"name": self.name, "ownerReferences": [owner]},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": micro_now()}})

    def _heartbeat(self) -> None:
        api = self.cp.api_client()
        core, coord = kubernetes.client.CoreV1Api(api), kubernetes.client.CoordinationV1Api(api)
        last_status = time.monotonic()
        while not self._stop.wait(LEASE_RENEW_SECONDS):
            try:
                self._renew_lease(coord)
                if time.monotonic() - last_status > STATUS_REPORT_SECONDS:
                    core.patch_node_status(self.name, {"status": self._node_status()})
                    last_status = time.monotonic()
            except Exception:
                self.log.exception("heartbeat failed")

    # -- watching pods bound to this node ------------------------------------------------------------
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
                for event in w.stream(core.list_pod_for_all_namespaces, field_selector=selector,
                                      resource_version=rv, timeout_seconds=5, allow_watch_bookmarks=True,
                                      _request_timeout=30):
                    raw = event["raw_object"]
                    rv = raw["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._queue.put(("event", event["type"], raw))
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

    # -- the worker thread: owns all pod state ---------------------------------------------------------
    def _work(self) -> None:
        core = kubernetes.client.CoreV1Api(self.cp.api_client())
        self._core = core
        self._launcher = Launcher(core, node_name=self.name, images=self.spec.images,
                                  passthrough_env=self.spec.passthrough_env, ca_cert=self.cp.pki.ca.cert,
                                  server=self.cp.server, pids_dir=self.workdir / "pids", allocatable=self.resources)
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

    @staticmethod
    def _run_call(fn: Callable[[], None], fut: concurrent.futures.Future[None]) -> None:
        try:
            fn()
            fut.set_result(None)
        except Exception as exc:
            fut.set_exception(exc)

    def _call(self, fn: Callable[[], None], timeout: float) -> None:
        """Run `fn` on the worker thread and wait for it."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put(("call", fn, fut))
        fut.result(timeout=timeout)

    def _find(self, namespace: str, name: str) -> PodRun:
        for run in self._runs.values():
            if run.key == (namespace, name) and not (run.deleted or run.done):
                return run
        raise LookupError(f"pod {namespace}/{name} is not running on node {self.name}")

    def _relist(self, pods: list[dict[str, Any]]) -> None:
        present = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self._runs if u not in present]:
            self._drop(self._runs[uid])
        for pod in pods:
            self._on_event("MODIFIED", pod)

    def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        run = self._runs.get(pod["metadata"]["uid"])
        if kind == "DELETED":
            if run:
                self._drop(run)
            return
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        if run is None:
            if deleting:  # finished earlier or never started here: nothing to stop, confirm the deletion
                self._delete_pod(pod)
            if deleting or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return
            run = self._admit(pod)
        run.pod = pod
        if deleting and not run.terminating:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            self._terminate(run, 30 if grace is None else int(grace))

    def _admit(self, pod: dict[str, Any]) -> PodRun:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name = meta["namespace"], meta["name"]
        pod_dir = self.workdir / "pods" / ns / f"{name}-{meta['uid'][:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        single = len(spec["containers"]) == 1
        containers = {c["name"]: ContainerRun(c["name"], c, pod_dir / f"{c['name']}.log", pod_dir / (
            "termination-log" if single else f"termination-log-{c['name']}")) for c in spec["containers"]}
        run = PodRun(pod, pod_dir, containers, gpus=[])
        self._runs[meta["uid"]] = run
        self._dirs[ns, name] = pod_dir
        for c in containers.values():
            self._logs[ns, name, c.name] = LogSource(c.log, lambda c=c, run=run: not run.done and not c.terminated)
        self.log.info("admitting pod %s/%s (%s)", ns, name, meta["uid"])
        wanted = sum(int((c.get("resources") or {}).get("limits", {}).get(GPU, 0)) for c in spec["containers"])
        if spec.get("initContainers"):
            self._reject(run, "UnsupportedPodSpec", "process nodes do not run initContainers")
        elif wanted > len(self._free_gpus):  # the device plugin's admission failure
            self._reject(run, "UnexpectedAdmissionError",
                         f"Allocate failed due to requested number of devices unavailable for {GPU}. "
                         f"Requested: {wanted}, Available: {len(self._free_gpus)}")
        else:
            run.gpus, self._free_gpus = self._free_gpus[:wanted], self._free_gpus[wanted:]
        return run

    @staticmethod
    def _reject(run: PodRun, reason: str, message: str) -> None:
        run.phase, run.reason, run.message, run.done = "Failed", reason, message, True
        for c in run.containers.values():
            c.waiting = None
            c.terminated = {"exitCode": 128, "reason": "StartError", "message": message}

    # -- the per-pod state machine ---------------------------------------------------------------------
    def _sync(self, run: PodRun) -> None:
        deleting = bool(run.pod["metadata"].get("deletionTimestamp"))
        if run.deleted or (run.done and run.reported and not deleting):
            return  # finished and reported: nothing changes until the pod is deleted
        if not run.done:
            self._advance(run)
        self._report(run)
        if run.done and deleting:
            self._delete_pod(run.pod)
            run.deleted = True

    def _advance(self, run: PodRun) -> None:
        """Reap, restart, start, enforce deadlines; settle the phase."""
        now_ = time.monotonic()
        policy = run.pod["spec"].get("restartPolicy", "Always")
        self._reap_all(run)
        for c in run.containers.values():
            failed = bool(c.terminated and c.terminated["exitCode"] != 0)
            restart = policy == "Always" or (policy == "OnFailure" and failed)
            if c.terminated and restart and not run.terminating and c.terminated.get("reason") != "StartError":
                c.last_terminated, c.terminated = c.terminated, None
                c.restart_count += 1
                c.waiting, c.retry_at = ("CrashLoopBackOff", "back-off restarting failed container"), now_ + 1
            if c.waiting and not run.terminating and now_ >= c.retry_at:
                argv = self._launcher.start(run, c)
                if argv and c.proc:
                    self.log.info("started %s/%s/%s pid %s: %s", *run.key, c.name, c.proc.pid, argv)
        deadline = run.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None and not run.terminating and now_ - run.started > int(deadline):
            run.phase, run.reason = "Failed", "DeadlineExceeded"
            run.message = "Pod was active on the node longer than the specified deadline"
            self._terminate(run, int(run.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        if run.terminating and run.kill_at is not None and now_ >= run.kill_at:
            self._kill(run, signal.SIGKILL)
        if all(c.terminated for c in run.containers.values()):
            ok = all(c.terminated and c.terminated["exitCode"] == 0 for c in run.containers.values())
            run.phase = "Failed" if run.reason or not ok else "Succeeded"
            run.done = True
            self._release_gpus(run)
        elif any(c.proc for c in run.containers.values()) and not run.reason:
            run.phase = "Running"

    def _reap_all(self, run: PodRun, wait: bool = False) -> None:
        for c in run.containers.values():
            if c.proc and wait:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(timeout=10)
            if c.proc and c.proc.poll() is not None:
                self._launcher.reap(c)

    def _kill(self, run: PodRun, sig: int) -> None:
        for c in run.containers.values():
            if c.proc and c.proc.poll() is None:
                signal_group(c.proc.pid, sig)
            if c.waiting and not c.proc:  # never started (or backing off): it will not start any more
                c.waiting = None
                c.terminated = c.terminated or {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                                "message": "The container could not be located when the pod "
                                                           "was terminated"}

    def _terminate(self, run: PodRun, grace: int) -> None:
        run.terminating = True
        run.kill_at = time.monotonic() + grace
        self.log.info("terminating %s/%s, grace %ss", *run.key, grace)
        self._kill(run, signal.SIGTERM if grace > 0 else signal.SIGKILL)

    def _release_gpus(self, run: PodRun) -> None:
        self._free_gpus = sorted(self._free_gpus + run.gpus)
        run.gpus = []

    def _report(self, run: PodRun) -> None:
        status = pod_status(run)
        if status == run.reported:
            return
        ns, name = run.key
        try:
            self._core.patch_namespaced_pod_status(name, ns, {"status": status})
            run.reported = status
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._drop(run)  # force-deleted behind our back

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        """Confirm a graceful deletion like the kubelet: grace 0, only this incarnation (uid precondition)."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self._core.delete_namespaced_pod(meta["name"], meta["namespace"], body=body, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _drop(self, run: PodRun) -> None:
        """The pod object is gone: kill whatever still runs and forget it (nothing left to report to)."""
        self._kill(run, signal.SIGKILL)
        self._reap_all(run, wait=True)
        self._release_gpus(run)
        run.deleted = True
        self._runs.pop(run.uid, None)
        for key in [k for k, src in self._logs.items() if k[:2] == run.key and src.path.parent == run.dir]:
            del self._logs[key]

    def _halt(self) -> None:
        self._stop.set()
        for thread in self._threads:
            # The watch thread may sit in a 5 s watch request; it only feeds the (stopped) worker, so
            # it is not waited for. The worker and heartbeat threads stop within 0.2 s / at once.
            thread.join(timeout=0.5 if thread.name.endswith("_watch") else 15)
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
        if self._log_handler:  # loggers are global by name: another node of this name gets its own file
            self.log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
