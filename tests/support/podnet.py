"""The real node's pod network on the host: a bridge, isolation and the DNAT that stands in for kube-proxy.

    net = PodNetwork(); net.setup(apiserver_port)    # bridge ocrjob0 10.244.0.1/24, chains OCRJOB-*
    net.expose(s3_port)                              # pods reach 127.0.0.1:s3_port as http://10.244.0.1:s3_port
    net.teardown()                                   # removes exactly what setup()/expose() added (idempotent)

Pods get no default route (CNI `isDefaultGateway: false`; only the service CIDR routes via the gateway) and
the filter chain drops whatever is forwarded from the pod subnet to elsewhere, or to it from elsewhere: nothing
a pod sends leaves the machine. Loopback-only servers become reachable through `route_localnet=1` on the bridge
plus DNAT (PREROUTING for pods, OUTPUT for the host): 10.0.0.1:443 -> the apiserver (so in-cluster config works
unchanged; its cert has SAN 10.0.0.1) and <gateway>:<port> -> 127.0.0.1:<port> for each exposed port.
Every rule lives in our own chains; the only rules in built-in chains are the jumps into them.
Must not import kubernetes: host plumbing only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.controlplane import SERVICE_CIDR
from tests.support.pki import LOOPBACK_IPS

BRIDGE = "ocrjob0"
POD_SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
KUBERNETES_SERVICE_IP = LOOPBACK_IPS[1]  # first IP of SERVICE_CIDR, in the apiserver cert's SANs
KUBERNETES_SERVICE_PORT = 443
# The pods' nameserver: a service IP nothing answers (no cluster DNS). Without one, containerd would copy the
# host's /etc/resolv.conf into every pod.
CLUSTER_DNS_IP = "10.0.0.10"
FILTER_CHAIN = "OCRJOB-FORWARD"
NAT_CHAIN = "OCRJOB-DNAT"
# (table, built-in chain, match args) of each jump into our chains.
_JUMPS = (("filter", "FORWARD", [], FILTER_CHAIN),
          ("nat", "PREROUTING", ["-i", BRIDGE], NAT_CHAIN),
          ("nat", "OUTPUT", [], NAT_CHAIN))
_CHAINS = (("filter", FILTER_CHAIN), ("nat", NAT_CHAIN))


class HostNetworkError(RuntimeError):
    """A host network command failed (the message carries the command and its stderr)."""


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise HostNetworkError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def iptables(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # -w: wait for the xtables lock instead of failing when the kubelet holds it.
    return run(["iptables", "-w", "5", "-t", table, *args], check=check)


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def bridge_ports(bridge: str = BRIDGE) -> list[str]:
    """Interfaces (the pods' veths) enslaved to the bridge."""
    out = run(["ip", "-o", "link", "show", "master", bridge], check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


@dataclass
class PodNetwork:
    bridge: str = BRIDGE
    subnet: str = POD_SUBNET
    gateway: str = GATEWAY
    exposed: list[int] = field(default_factory=list)

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def setup(self, apiserver_port: int) -> None:
        """Bridge + address + route_localnet, our chains, the jumps and the apiserver DNAT. Undo with teardown()."""
        if run(["ip", "link", "show", self.bridge], check=False).returncode == 0:
            raise HostNetworkError(f"bridge {self.bridge} already exists: a real node of another session runs, or "
                                   f"one was not torn down (python -m tests.support.nodehost cleanup)")
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.gateway}/{self.prefix_len}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        sysctl_path(f"net.ipv4.conf.{self.bridge}.route_localnet").write_text("1")
        # Service IPs the DNAT misses go to the (isolated) bridge, never out of the default route.
        run(["ip", "route", "add", SERVICE_CIDR, "dev", self.bridge, "src", self.gateway])
        for table, chain in _CHAINS:
            iptables(table, "-N", chain)
        iptables("filter", "-A", FILTER_CHAIN, "-s", self.subnet, "!", "-d", self.subnet, "-j", "DROP")
        iptables("filter", "-A", FILTER_CHAIN, "-d", self.subnet, "!", "-i", self.bridge, "-j", "DROP")
        for table, builtin, match, target in _JUMPS:
            iptables(table, "-I", builtin, "1", *match, "-j", target)
        self._dnat(KUBERNETES_SERVICE_IP, KUBERNETES_SERVICE_PORT, apiserver_port)

    def expose(self, port: int) -> str:
        """Make the host's 127.0.0.1:`port` reachable from pods (and the host) at `<gateway>:port`; its URL host."""
        if port not in self.exposed:
            self._dnat(self.gateway, port, port)
            self.exposed.append(port)
        return f"{self.gateway}:{port}"

    def _dnat(self, ip: str, port: int, to_port: int) -> None:
        iptables("nat", "-A", NAT_CHAIN, "-d", f"{ip}/32", "-p", "tcp", "--dport", str(port),
                 "-j", "DNAT", "--to-destination", f"127.0.0.1:{to_port}")

    def teardown(self) -> None:
        """Remove the veths, the bridge (its route and sysctl go with it), our jumps and chains, our conntrack
        entries. Idempotent; safe after a partial setup()."""
        for port in bridge_ports(self.bridge):
            run(["ip", "link", "del", port], check=False)
        run(["ip", "link", "del", self.bridge], check=False)
        for table, builtin, match, target in _JUMPS:
            while iptables(table, "-D", builtin, *match, "-j", target, check=False).returncode == 0:
                pass
        for table, chain in _CHAINS:
            iptables(table, "-F", chain, check=False)
            iptables(table, "-X", chain, check=False)
        self.exposed.clear()
        if shutil.which("conntrack"):  # NAT entries of pod connections would outlive us (until they time out)
            for args in (["-s", self.subnet], ["-d", self.subnet], ["-d", KUBERNETES_SERVICE_IP]):
                with contextlib.suppress(subprocess.SubprocessError):
                    run(["conntrack", "-D", *args], check=False)

    def cni_conflist(self, ipam_dir: Path) -> dict[str, object]:
        """CNI bridge + host-local: addresses from the subnet, no default route, only the service CIDR routed."""
        return {
            "cniVersion": "0.4.0", "name": "ocrjob-pods",
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True, "isDefaultGateway": False,
                 "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(ipam_dir),
                          "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
                          "routes": [{"dst": SERVICE_CIDR, "gw": self.gateway}]}},
            ],  # containerd sets up each pod's loopback itself
        }


def leftovers() -> list[str]:
    """What of ours is still on the host (for the teardown test and `cleanup`): bridge, chains, jumps."""
    found = []
    if run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    for table in ("filter", "nat"):
        rules = iptables(table, "-S", check=False).stdout
        found += [f"{table}: {line}" for line in rules.splitlines() if "OCRJOB-" in line]
    return found
