"""Undoing what a real kubelet + containerd leave on the host: mounts, cgroups, processes, iptables chains,
sysctls and the host-global paths they hard-code.

`HostSnapshot.take()` before the node starts records what was already there; `restore()` afterwards puts the
sysctls back and removes only what appeared since (paths, kubelet chains). The other helpers find our leftovers
by location (mounts under a directory, processes whose command line names our containerd socket), so they also
clean up after a session that was killed. Must not import kubernetes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.podnet import run, sysctl_path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_TREES = ("kubepods", "k8s.io")  # the kubelet's pod cgroups (cgroupfs driver), containerd's default
# The kubelet sets these at start (setupKernelTunables); the CNI bridge plugin turns on ip_forward.
SYSCTLS = ("net.ipv4.ip_forward", "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes")
# Paths the kubelet/containerd/CNI hard-code, outside the root/state dirs we give them.
HOST_PATHS = (Path("/var/lib/kubelet"), Path("/var/log/containers"), Path("/var/log/pods"), Path("/run/netns"),
              Path("/run/containerd"), Path("/var/lib/cni"), Path("/etc/cni"), Path("/opt/cni"))
KUBELET_CHAIN_PREFIX = "KUBE-"


def _iptables_chains(binary: str, table: str) -> set[str]:
    out = run([binary, "-w", "5", "-t", table, "-S"], check=False).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("-N ")}


def _tables(binary: str) -> list[str]:
    return ["filter", "nat", "mangle"] if shutil.which(binary) else []


@dataclass
class HostSnapshot:
    sysctls: dict[str, str] = field(default_factory=dict)
    paths: set[Path] = field(default_factory=set)  # those of HOST_PATHS that existed before
    chains: set[tuple[str, str, str]] = field(default_factory=set)  # (binary, table, chain) that existed before
    netns: set[str] = field(default_factory=set)  # /run/netns entries that existed before

    def to_json(self) -> dict[str, Any]:
        return {"sysctls": self.sysctls, "paths": sorted(map(str, self.paths)), "chains": sorted(self.chains),
                "netns": sorted(self.netns)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostSnapshot:
        return cls(dict(data["sysctls"]), {Path(p) for p in data["paths"]},
                   {(b, t, c) for b, t, c in data["chains"]}, set(data["netns"]))

    @classmethod
    def take(cls) -> HostSnapshot:
        snap = cls()
        for name in SYSCTLS:
            with contextlib.suppress(OSError):
                snap.sysctls[name] = sysctl_path(name).read_text().strip()
        snap.paths = {p for p in HOST_PATHS if p.exists()}
        snap.netns = {str(p) for p in Path("/run/netns").glob("*")}
        snap.chains = {(b, t, c) for b in ("iptables", "ip6tables") for t in _tables(b) for c in _iptables_chains(b, t)}
        return snap

    def restore(self) -> None:
        """Sysctls back, the kubelet's new KUBE-* chains gone, new host paths removed (after unmounting)."""
        for name, value in self.sysctls.items():
            with contextlib.suppress(OSError):
                if sysctl_path(name).read_text().strip() != value:
                    sysctl_path(name).write_text(value)
        for binary in ("iptables", "ip6tables"):
            for table in _tables(binary):
                new = {c for c in _iptables_chains(binary, table) if c.startswith(KUBELET_CHAIN_PREFIX)
                       and (binary, table, c) not in self.chains}
                remove_chains(binary, table, new)
        for path in HOST_PATHS:
            if path not in self.paths and path.exists():
                unmount_under(path)
                shutil.rmtree(path, ignore_errors=True)


def remove_chains(binary: str, table: str, chains: set[str]) -> None:
    """Delete every rule that jumps into `chains`, then flush and delete them."""
    if not chains:
        return
    rules = run([binary, "-w", "5", "-t", table, "-S"], check=False).stdout.splitlines()
    for rule in rules:
        parts = rule.split()
        if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] in chains:
            run([binary, "-w", "5", "-t", table, "-D", *parts[1:]], check=False)
    for chain in chains:
        run([binary, "-w", "5", "-t", table, "-F", chain], check=False)
    for chain in chains:
        run([binary, "-w", "5", "-t", table, "-X", chain], check=False)


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root.resolve())
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_under(root: Path) -> None:
    """Unmount everything at or below `root` (lazily if busy); repeats for stacked mounts."""
    for _ in range(5):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if run(["umount", point], check=False).returncode != 0:
                run(["umount", "-l", point], check=False)


def cgroup_dirs(tree: str) -> list[Path]:
    """`<controller>/<tree>` directories that exist, one per cgroup v1 controller (+ the unified mount)."""
    if not CGROUP_ROOT.is_dir():
        return []
    return [d / tree for d in CGROUP_ROOT.iterdir() if (d / tree).is_dir()]


def cgroup_pids(tree: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(tree):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(x) for x in procs.read_text().split()}
    return pids


def remove_cgroups(tree: str) -> list[Path]:
    """rmdir the trees bottom-up; returns what could not be removed (still holding processes)."""
    left = []
    for top in cgroup_dirs(tree):
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            try:
                d.rmdir()
            except OSError:
                left.append(d)
    return left


def memory_cgroup_files(pid: int) -> tuple[Path, Path]:
    """(limit, usage) files of the memory cgroup `pid` is in: cgroup v1's memory controller where it is
    mounted (this machine's hybrid layout), else the unified hierarchy's memory.max and memory.current."""
    lines = [line.split(":", 2) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    v1 = next((path for _, controllers, path in lines if "memory" in controllers.split(",")), None)
    if v1 is not None and (CGROUP_ROOT / "memory").is_dir():
        folder = CGROUP_ROOT / "memory" / v1.lstrip("/")
        return folder / "memory.limit_in_bytes", folder / "memory.usage_in_bytes"
    unified = next(path for hierarchy, _, path in lines if hierarchy == "0")
    root = CGROUP_ROOT / "unified" if (CGROUP_ROOT / "unified").is_dir() else CGROUP_ROOT
    folder = root / unified.lstrip("/")
    return folder / "memory.max", folder / "memory.current"


def pids_in_cgroup(folder: Path) -> list[int]:
    """The processes in one cgroup folder, not below it (cgroup.procs; v1 and v2 alike); none once it is gone."""
    try:
        return [int(line) for line in (folder / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def pids_mentioning(needle: str) -> list[int]:
    """Processes whose command line contains `needle` (e.g. our containerd socket: its shims name it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
    return found


def kill_pids(pids: set[int] | list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.05)


def kubelet_chains_left(snapshot: HostSnapshot | None = None) -> list[str]:
    """KUBE-* chains present now (that were not there at `snapshot`)."""
    known = snapshot.chains if snapshot else set()
    return [f"{b} {t} {c}" for b in ("iptables", "ip6tables") for t in _tables(b) for c in _iptables_chains(b, t)
            if c.startswith(KUBELET_CHAIN_PREFIX) and (b, t, c) not in known]

