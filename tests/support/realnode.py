"""A real Kubernetes node for the local cluster: the kubelet (v1.37.2) on its own containerd, pods in real
containers on the pod network of podnet.py, fake GPUs through a real device plugin (tests/support/fakegpu).

    node = RealNode(control_plane, RealNodeSpec(gpus=2), workdir, pause=images.ensure("pause")).start()
    node.import_image(images.ensure("base").archive)
    node.expose(s3_port)          # S3 on 127.0.0.1 -> http://10.244.0.1:<port> for pods
    node.stop()                   # idempotent; also from atexit and `python -m tests.support.nodehost cleanup`

The kubelet, the /kubepods cgroups, /var/lib/kubelet/device-plugins (the kubelet hard-codes it) and the bridge
are host-global: a host-wide flock admits one real node per machine; a second one fails at once with
RealNodeBusyError naming the holder. What a killed session left behind is cleaned up by the next start (or
`python -m tests.support.nodehost cleanup`): nodehost.py. Teardown order (REAL-NODE.md): pods, kubelet,
containers, containerd, mounts, network, iptables chains and sysctls, cgroups.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from tests.support import hostclean, nodehost
from tests.support.nodeconfig import (
    DEFAULT_EVICTION_HARD,
    ContainerdPaths,
    KubeletSettings,
    containerd_toml,
    kubelet_config,
)
from tests.support.nodehost import (
    DEVICE_PLUGIN_DIR,
    FAKEGPU_SOCKET_PREFIX,
    OOM_FILL_DIR,
    OOM_FILL_PREFIX,
    HostLock,
    RealNodeError,
    cleanup_leftovers,
    teardown_host,
)
from tests.support.pki import write_kubeconfig
from tests.support.podnet import CLUSTER_DNS_IP, PodNetwork
from tests.support.procs import alive, free_ports, spawn, stop_group, tail, wait_until

if TYPE_CHECKING:
    from tests.support.controlplane import ControlPlane

GPU = "nvidia.com/gpu"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
CTR_NAMESPACE = "k8s.io"  # the CRI plugin's containerd namespace
REPO = Path(__file__).resolve().parents[2]
FAKEGPU_BUILD = REPO / "scripts" / "build-fakegpu.sh"
FAKEGPU_REGISTERED = f"registered {GPU} "  # tests/support/fakegpu/main.go logs it after each Register
OOM_HEADROOM_BYTES = 32 * 2**20  # what oom_kill lets a container allocate beyond its usage before the kernel acts
# A host process that joins the memory cgroup given as $0 and writes up to $2 bytes into a tmpfs file $1: page cache
# charged to the cgroup that is in nobody's RSS, so the OOM killer's choice is PID 1, not the writer (with
# anonymous memory, the writer's RSS would outweigh PID 1's oom_score_adj bonus once it nears the limit).
OOM_HOG = 'echo $$ > "$0/cgroup.procs" && exec head -c "$2" /dev/zero > "$1"'
OOM_PARKING = "ocrjob-oom-parking"  # oom_kill's cgroup for a container's other processes, inside the pod's


@dataclass(frozen=True)
class ImageArchive:
    """What the node needs of an image: its reference and an OCI archive naming it (images.BuiltImage fits)."""
    ref: str
    archive: Path


@dataclass
class RealNodeSpec:
    """What the node registers as: name, fake GPUs, pod capacity, labels and taints (cpu and memory are the
    machine's, measured by the kubelet; `system_reserved` lowers allocatable)."""
    name: str = "ocrjob-node-0"
    gpus: int = 0
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)  # [{"key", "value", "effect"}]
    system_reserved: dict[str, str] = field(default_factory=dict)
    eviction_hard: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EVICTION_HARD))


def real_gpu_node_spec(name: str = "ocrjob-node-0", gpus: int = 2, **kw: Any) -> RealNodeSpec:
    """A node labelled like one running the NVIDIA GPU operator, its GPUs from the fake device plugin."""
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "Fake-Device-Plugin-GPU",
              "nvidia.com/gpu.count": str(gpus), **kw.pop("labels", {})}
    return RealNodeSpec(name=name, gpus=gpus, labels=labels, **kw)


def gpu_uuids(node: str, count: int) -> list[str]:
    """Stable NVIDIA-style device IDs (GPU-8-4-4-4-12 hex) for a node's fake GPUs."""
    ids = []
    for i in range(count):
        h = hashlib.sha256(f"{node}/{i}".encode()).hexdigest()
        ids.append(f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}")
    return ids


def fakegpu_binary(timeout: float = 600) -> Path:
    """The device plugin binary, built into the cache (keyed by its source hash) when missing."""
    out = subprocess.run(["bash", str(FAKEGPU_BUILD)], stdout=subprocess.PIPE, text=True, check=True,
                         timeout=timeout, cwd=REPO)
    return Path(out.stdout.strip().splitlines()[-1])


class RealNode:
    """containerd + kubelet (+ the fake-GPU plugin) as child processes; `start()` returns once Ready."""

    def __init__(self, control_plane: ControlPlane, spec: RealNodeSpec, workdir: Path, *, pause: ImageArchive,
                 images: tuple[ImageArchive, ...] = (), bin_dir: Path | None = None) -> None:
        self.cp = control_plane
        self.spec = spec
        self.name = spec.name
        self.workdir = workdir.resolve()
        self.pause = pause
        self.images = images
        self.bin_dir = bin_dir
        self.net = PodNetwork()
        self.ctrd = ContainerdPaths.under(self.workdir / "containerd")
        self.kubelet_root = self.workdir / "kubelet"
        self.logs = {name: self.workdir / "logs" / f"{name}.log" for name in ("containerd", "kubelet", "fakegpu")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.gpu_ids = gpu_uuids(spec.name, spec.gpus)
        self.ready_seconds = 0.0  # containerd start -> node Ready (and GPUs advertised)
        self._lock = HostLock()
        self._snapshot: hostclean.HostSnapshot | None = None
        self._settings: KubeletSettings | None = None
        self._kubelet_argv: list[str] = []
        self._stopped = True
        self.holder_pid = os.getpid()

    @property
    def gateway(self) -> str:
        return self.net.gateway

    @property
    def host_snapshot(self) -> hostclean.HostSnapshot:
        """The host as it was before this node started (what teardown restores)."""
        assert self._snapshot is not None, "start() first"
        return self._snapshot

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> RealNode:
        self._lock.acquire(f"pid {os.getpid()} ({' '.join(sys.argv)[:200]}), workdir {self.workdir}")
        self._stopped = False
        atexit.register(self.stop)
        try:
            cleanup_leftovers()  # a killed session's node, recorded in STATE_PATH
            self._snapshot = hostclean.HostSnapshot.take()
            nodehost.save_state(self.workdir, self.ctrd.socket, self._snapshot)
            began = time.monotonic()
            self.net.setup(int(self.cp.server.rsplit(":", 1)[1]))
            self._start_containerd(timeout)
            for image in (self.pause, *self.images):
                self.import_image(image.archive)
            DEVICE_PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
            self._configure_kubelet()
            self.start_kubelet()
            if self.spec.gpus:
                self._run("fakegpu", [str(fakegpu_binary()), f"-dir={DEVICE_PLUGIN_DIR}",
                                      f"-socket={FAKEGPU_SOCKET_PREFIX}{self.name}.sock", f"-resource={GPU}",
                                      f"-ids={','.join(self.gpu_ids)}"])
            self.wait_ready(timeout)
            # A node of the same name stopped earlier was cordoned by stop(); this kubelet serves it again.
            self.core().patch_node(self.name, {"spec": {"unschedulable": False}})
            self.ready_seconds = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, name: str, argv: list[str]) -> None:
        log_path = self.logs[name]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as f:
            f.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self.procs[name] = spawn(argv, log_path, env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})

    def _check_alive(self, name: str) -> str | None:
        proc = self.procs.get(name)
        return None if proc is None or proc.poll() is None else f"{name} exited with {proc.returncode}"

    def _context(self, *names: str) -> str:
        return "\n".join(f"--- {n} log:\n{tail(self.logs[n], 40)}" for n in names)

    def _start_containerd(self, timeout: float) -> None:
        config = self.workdir / "containerd" / "config.toml"
        self.ctrd.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        conflist = self.net.cni_conflist(self.workdir / "containerd" / "cni-ipam")
        (self.ctrd.cni_conf_dir / "10-ocrjob.conflist").write_text(json.dumps(conflist, indent=1))
        config.write_text(containerd_toml(self.ctrd, self.pause.ref))
        self._run("containerd", ["containerd", f"--config={config}", "--log-level=info"])
        wait_until(lambda: self.ctr("version", check=False).returncode == 0, timeout=timeout,
                   what="containerd to answer", abort=lambda: self._check_alive("containerd"),
                   on_timeout=lambda: self._context("containerd"))

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`ctr -n k8s.io --address <our socket> ARGS`."""
        argv = ["ctr", "-n", CTR_NAMESPACE, "--address", str(self.ctrd.socket), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RealNodeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def import_image(self, archive: Path) -> None:
        """Put an OCI archive into containerd; pods use its reference with `imagePullPolicy: Never`."""
        self.ctr("images", "import", str(archive))

    def add_image(self, image: ImageArchive) -> None:
        """Import `image` now and into any node made from this one's settings (restart)."""
        self.import_image(image.archive)
        self.images = (*self.images, image)

    def expose(self, port: int) -> str:
        """Make a 127.0.0.1 server reachable from pods; returns `<gateway>:<port>`."""
        return self.net.expose(port)

    def _configure_kubelet(self) -> None:
        pki = self.cp.pki
        client = pki.issue(f"kubelet-{self.name}-client", f"system:node:{self.name}", organization="system:nodes",
                           client=True)
        serving = pki.issue(f"kubelet-{self.name}-serving", f"system:node:{self.name}", server=True,
                            dns_names=(self.name,), ips=(self.gateway,))
        kubeconfig = write_kubeconfig(self.workdir / "kubelet.kubeconfig", server=self.cp.server, ca=pki.ca.cert,
                                      user=f"system:node:{self.name}", client=client)
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("")  # no nameservers: nothing to resolve beyond the machine
        port, healthz = free_ports(2)
        self._settings = KubeletSettings(
            address=self.gateway, port=port, healthz_port=healthz, client_ca=pki.ca.cert, tls_cert=serving.cert,
            tls_key=serving.key, runtime_socket=self.ctrd.socket, resolv_conf=resolv,
            pod_logs_dir=self.workdir / "pod-logs", cluster_dns=(CLUSTER_DNS_IP,), max_pods=self.spec.pods,
            taints=tuple(self.spec.taints),
            eviction_hard=dict(self.spec.eviction_hard), system_reserved=dict(self.spec.system_reserved))
        labels = ",".join(f"{k}={v}" for k, v in {"ocrjob.dev/real-node": "true", **self.spec.labels}.items())
        bin_dir = self.bin_dir or self.cp.bin_dir or _control_plane_bin_dir()
        self._kubelet_argv = [
            str(bin_dir / "kubelet"), f"--config={self.workdir / 'kubelet-config.yaml'}",
            f"--kubeconfig={kubeconfig}", f"--root-dir={self.kubelet_root}",
            f"--cert-dir={self.workdir / 'kubelet-pki'}",
            f"--node-ip={self.gateway}",  # it refuses loopback; the gateway keeps it on the pod network
            f"--hostname-override={self.name}", f"--node-labels={labels}", "--v=2"]

    def start_kubelet(self, **overrides: Any) -> None:
        """(Re)start the kubelet; `overrides` replace KubeletSettings fields (e.g. eviction_hard) from now on."""
        assert self._settings is not None, "start() first"
        if overrides:
            self._settings = KubeletSettings(**{**self._settings.__dict__, **overrides})
        (self.workdir / "kubelet-config.yaml").write_text(yaml.safe_dump(kubelet_config(self._settings)))
        self._run("kubelet", self._kubelet_argv)

    def stop_kubelet(self, grace: float = 10) -> None:
        """Stop the kubelet (node loss: containers keep running; the node goes NotReady after the grace period)."""
        if "kubelet" in self.procs:
            stop_group(self.procs.pop("kubelet"), grace=grace)

    def restart_kubelet(self, timeout: float = 120, **overrides: Any) -> None:
        """Stop and start the kubelet, e.g. with new eviction thresholds (`eviction_hard={...}`); returns once
        the new kubelet has reported the node Ready (a kubelet that refuses its settings fails here)."""
        registrations = self.plugin_registrations()
        self.stop_kubelet()
        self.start_kubelet(**overrides)
        if self.spec.gpus:
            # Until the plugin registered with the new kubelet, it admits no GPU pod (UnexpectedAdmissionError).
            wait_until(lambda: self.plugin_registrations() > registrations, timeout=timeout,
                       what="the device plugin to register with the new kubelet",
                       abort=lambda: self._check_alive("kubelet") or self._check_alive("fakegpu"),
                       on_timeout=lambda: self._context("kubelet", "fakegpu"))
        # A status written after now (heartbeats have 1 s resolution) comes from the new kubelet and has the GPUs.
        since = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=1)
        self.wait_ready(timeout, heartbeat_since=since)

    def plugin_registrations(self) -> int:
        """How often the fake-GPU plugin has registered with a kubelet (its log says so once each time)."""
        try:
            return self.logs["fakegpu"].read_text().count(FAKEGPU_REGISTERED)
        except FileNotFoundError:
            return 0

    def restart_containerd(self, timeout: float = 60) -> None:
        """Stop and start containerd (its containers survive in their shims, as on a real node)."""
        stop_group(self.procs.pop("containerd"), grace=10)
        self._start_containerd(timeout)

    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.cp.api_client())

    def wait_ready(self, timeout: float = 120, heartbeat_since: dt.datetime | None = None) -> None:
        """Ready=True, the not-ready taint gone, and the fake GPUs in allocatable; with `heartbeat_since`, also
        reported at or after that time (by a kubelet started since, not the status its predecessor left)."""
        core = self.core()

        def ready() -> bool:
            node = core.read_node(self.name)
            conditions = {c.type: c for c in node.status.conditions or []}
            gpus = int((node.status.allocatable or {}).get(GPU, "0"))
            fresh = heartbeat_since is None or (
                "Ready" in conditions and conditions["Ready"].last_heartbeat_time >= heartbeat_since)
            return (fresh and "Ready" in conditions and conditions["Ready"].status == "True"
                    and gpus == self.spec.gpus and NOT_READY_TAINT not in {t.key for t in node.spec.taints or []})

        wait_until(ready, timeout=timeout, what=f"real node {self.name} Ready with {self.spec.gpus} GPUs",
                   abort=lambda: self._check_alive("kubelet") or self._check_alive("containerd"),
                   on_timeout=lambda: self._context("kubelet", "containerd", "fakegpu"))

    # -- teardown --------------------------------------------------------------------------------------
    def stop(self, delete_node: bool = False, timeout: float = 60) -> None:
        """Everything start() did, undone, in REAL-NODE.md's order; idempotent, safe after a failed start."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        try:
            if "kubelet" in self.procs:
                with contextlib.suppress(Exception):
                    self._delete_pods(timeout)
            for name in ("fakegpu", "kubelet"):
                if name in self.procs:
                    stop_group(self.procs.pop(name), grace=10)
            if delete_node:
                with contextlib.suppress(Exception):
                    self.core().delete_node(self.name)
            if "containerd" in self.procs:
                with contextlib.suppress(Exception):
                    self._remove_containers()
                stop_group(self.procs.pop("containerd"), grace=10)
            teardown_host(self.workdir, str(self.ctrd.socket), self._snapshot, self.net)
            # Only now: after a failed teardown the record lets the next start (or `cleanup`) finish it.
            nodehost.STATE_PATH.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def _delete_pods(self, timeout: float) -> None:
        """Delete the pods bound here and wait until the kubelet has torn down their sandboxes (veths gone).
        The node is cordoned first: otherwise a controller's replacement (the operator Deployment's next pod)
        is bound here again at once, and the wait for an empty node runs into its timeout twice."""
        core = self.core()
        with contextlib.suppress(ApiException):
            core.patch_node(self.name, {"spec": {"unschedulable": True}})
        selector = f"spec.nodeName={self.name}"
        for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=1)

        def gone() -> bool:
            return not core.list_pod_for_all_namespaces(field_selector=selector).items

        with contextlib.suppress(TimeoutError):
            wait_until(gone, timeout=timeout, what="the node's pods to be deleted")
        for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:  # the kubelet did not confirm
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self.ctr("tasks", "ls", "-q", check=False).stdout.strip(), timeout=timeout,
                       what="the node's sandboxes to stop")

    def _remove_containers(self) -> None:
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            self.ctr("tasks", "delete", "-f", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)

    # -- faults --------------------------------------------------------------------------------------------
    def container_id(self, namespace: str, pod: str, container: str | None = None) -> str:
        """containerd's ID of a running pod's container (the first one when `container` is None)."""
        status = self.core().read_namespaced_pod(pod, namespace).status
        for found in status.container_statuses or []:
            if container in (None, found.name) and found.container_id:
                return str(found.container_id).split("://", 1)[1]
        raise RealNodeError(f"pod {namespace}/{pod} has no started container {container or ''}".rstrip())

    def signal_container(self, namespace: str, pod: str, container: str | None = None,
                         signal: str = "SIGKILL") -> None:
        """Send `signal` to every process of a container through containerd, as a crash (SIGKILL) or a hang
        (SIGSTOP) would hit it: the kubelet sees what a real node sees (exit 137, or a silent container)."""
        self.ctr("tasks", "kill", "--all", "-s", signal, self.container_id(namespace, pod, container))

    def sigkill(self, namespace: str, pod: str, container: str | None = None) -> None:
        self.signal_container(namespace, pod, container, "SIGKILL")

    def task_pid(self, container_id: str) -> int:
        """The host PID of a container's init process (its PID 1)."""
        for line in self.ctr("tasks", "ls").stdout.splitlines()[1:]:
            task, pid, *_ = line.split()
            if task == container_id:
                return int(pid)
        raise RealNodeError(f"container {container_id} has no running task")

    def oom_kill(self, namespace: str, pod: str, container: str | None = None, timeout: float = 60) -> None:
        """A real kernel OOM kill of a running container's PID 1, at a moment the test chooses, whatever else runs
        in it: the container's other processes move to a parking memory cgroup in the pod's (their memory stays
        charged where it was), its PID 1 gets oom_score_adj 1000, its limit is set to its usage plus
        OOM_HEADROOM_BYTES, and a host process (oom_score_adj 0) joins the cgroup and fills a tmpfs file until the
        kernel kills PID 1, the only process there that can lose to it; the PID namespace's end takes the rest.
        containerd saw the cgroup's OOM event, so the kubelet reports OOMKilled (exit 137), as for any container
        over its limit."""
        pid = self.task_pid(self.container_id(namespace, pod, container))
        limit, usage = hostclean.memory_cgroup_files(pid)
        parking = limit.parent.parent / OOM_PARKING
        parking.mkdir(exist_ok=True)
        for other in hostclean.pids_in_cgroup(limit.parent):
            if other != pid:
                with contextlib.suppress(OSError):  # it may just have exited
                    (parking / "cgroup.procs").write_text(str(other))
        Path(f"/proc/{pid}/oom_score_adj").write_text("1000")
        limit.write_text(str(int(usage.read_text()) + OOM_HEADROOM_BYTES))
        fill = OOM_FILL_DIR / f"{OOM_FILL_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
        hog = subprocess.Popen(["bash", "-c", OOM_HOG, str(limit.parent), str(fill), str(4 * OOM_HEADROOM_BYTES)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: not alive(pid), timeout=timeout, interval=0.1,
                       what=f"the OOM killer to end {namespace}/{pod}")  # the writer dies next: not a failure
        finally:
            hostclean.kill_pids([*hostclean.pids_in_cgroup(limit.parent), hog.pid])
            hog.wait(timeout=10)
            fill.unlink(missing_ok=True)  # its pages stay charged to the pod until then
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not hostclean.pids_in_cgroup(parking), timeout=10, what="parked processes to end")
            with contextlib.suppress(OSError):
                parking.rmdir()

    def pids(self) -> dict[str, int]:
        return {f"{self.name} {name}": proc.pid for name, proc in self.procs.items()}

    def pod_logs(self, namespace: str | None = None) -> dict[str, Path]:
        """`ns/pod/container` -> the kubelet's newest log file of it (podLogsDir/<ns>_<pod>_<uid>/<c>/<n>.log)."""
        found: dict[str, Path] = {}
        root = self.workdir / "pod-logs"
        for path in sorted(root.glob("*/*/*.log"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []:
            ns, pod, _uid = path.parent.parent.name.split("_", 2)
            if namespace in (None, ns):
                found[f"{ns}/{pod}/{path.parent.name}"] = path
        return found


def _control_plane_bin_dir() -> Path:
    from tests.support.controlplane import control_plane_bin_dir

    return control_plane_bin_dir()
