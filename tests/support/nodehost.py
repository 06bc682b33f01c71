"""The real node's host-global side: the host-wide lock, the record of what a running node put on the host,
and the teardown of the host part, also for a node whose session was killed.

    python -m tests.support.nodehost cleanup    # undo what a killed session's real node left; lists leftovers

One real node per machine: the kubelet hard-codes /var/lib/kubelet/device-plugins, its pod cgroups are
/kubepods, the bridge and chains are ours by name. LOCK_PATH (flock) admits one; STATE_PATH records the
node's work dir, containerd socket and the host snapshot taken before it started, so the next start (or
`cleanup`) can undo a killed one. Must not import kubernetes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
from pathlib import Path

from tests.support import hostclean, podnet
from tests.support.podnet import PodNetwork

LOCK_PATH = Path("/run/ocrjob-realnode.lock")
STATE_PATH = Path("/run/ocrjob-realnode.json")  # what the running (or a killed) node put on the host
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")  # hard-coded in the kubelet (pluginapi.KubeletSocket)
FAKEGPU_SOCKET_PREFIX = "ocrjob-fakegpu-"  # <prefix><node>.sock in DEVICE_PLUGIN_DIR; also names its process
OOM_FILL_DIR = Path("/dev/shm")  # RealNode.oom_kill's tmpfs files (<prefix>...) that charge a container's cgroup
OOM_FILL_PREFIX = "ocrjob-oom-"
log = logging.getLogger("ocrjob.realnode")


class RealNodeError(RuntimeError):
    """The real node could not start (the message carries the failing component's log tail)."""


class RealNodeBusyError(RealNodeError):
    """Another process holds the host-wide real-node lock."""


class HostLock:
    """flock(LOCK_PATH) held for the node's lifetime; the file names the holder for the error message."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, holder: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = self.path.read_text().strip() or "unknown"
            raise RealNodeBusyError(f"a real node already runs on this host ({who}); one per machine: stop it "
                                    f"first (python -m tests.support.cluster down, or end that test session)") from None
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def save_state(workdir: Path, socket: Path, snapshot: hostclean.HostSnapshot) -> None:
    STATE_PATH.write_text(json.dumps({"pid": os.getpid(), "workdir": str(workdir), "socket": str(socket),
                                      "snapshot": snapshot.to_json()}))


def teardown_host(workdir: Path, socket: str, snapshot: hostclean.HostSnapshot | None,
                  net: PodNetwork | None = None) -> None:
    """The host part of teardown, also for a node whose processes are already gone: leftover shims and
    container processes, mounts, network, sysctls/chains/paths, cgroups."""
    hostclean.kill_pids(hostclean.pids_mentioning(socket))  # shims (and a containerd that outlived its parent)
    for tree in hostclean.CGROUP_TREES:
        hostclean.kill_pids(hostclean.cgroup_pids(tree))
    hostclean.unmount_under(workdir)
    for netns in Path("/run/netns").glob("cni-*"):  # containerd's pod network namespaces (bind mounts)
        if snapshot is None or str(netns) not in snapshot.netns:
            hostclean.unmount_under(netns)
            netns.unlink(missing_ok=True)
    (net or PodNetwork()).teardown()
    if snapshot is not None:
        snapshot.restore()
    for tree in hostclean.CGROUP_TREES:
        hostclean.remove_cgroups(tree)
    with contextlib.suppress(OSError):  # ours; the kubelet recreates the dir, /var/lib/kubelet goes with restore()
        for sock in DEVICE_PLUGIN_DIR.glob(f"{FAKEGPU_SOCKET_PREFIX}*.sock"):
            sock.unlink()
    for fill in OOM_FILL_DIR.glob(f"{OOM_FILL_PREFIX}*"):  # left by an oom_kill whose session was killed
        fill.unlink(missing_ok=True)


def cleanup_leftovers() -> bool:
    """Tear down what a node of a killed session left (recorded in STATE_PATH); False if nothing was recorded.
    Only call while holding the host lock."""
    try:
        state = json.loads(STATE_PATH.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    log.warning("cleaning up a real node left by pid %s (workdir %s)", state.get("pid"), state.get("workdir"))
    # Its containerd and kubelet (their flags name the work dir) and device plugin.
    hostclean.kill_pids(hostclean.pids_mentioning(state["workdir"]) + hostclean.pids_mentioning(FAKEGPU_SOCKET_PREFIX))
    teardown_host(Path(state["workdir"]), state["socket"], hostclean.HostSnapshot.from_json(state["snapshot"]))
    STATE_PATH.unlink(missing_ok=True)
    return True


def leftovers() -> list[str]:
    """Everything a stopped node must not leave behind (empty when clean): for the teardown test."""
    found = podnet.leftovers()
    found += [f"veth {p}" for p in podnet.bridge_ports()]
    found += [f"cgroup {d}" for tree in hostclean.CGROUP_TREES for d in hostclean.cgroup_dirs(tree)]
    found += [f"iptables chain {c}" for c in hostclean.kubelet_chains_left()]
    found += [f"process {pid}" for pid in hostclean.pids_mentioning("containerd-shim")]
    found += [f"netns {p}" for p in Path("/run/netns").glob("cni-*")]
    return found


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.support.nodehost cleanup`: remove a killed session's node from the host."""
    args = argv if argv is not None else sys.argv[1:]
    if args != ["cleanup"]:
        print("usage: python -m tests.support.nodehost cleanup", file=sys.stderr)
        return 2
    lock = HostLock()
    lock.acquire(f"pid {os.getpid()} (cleanup)")
    try:
        print("cleaned up" if cleanup_leftovers() else "nothing recorded to clean up", file=sys.stderr)
    finally:
        lock.release()
    left = leftovers()
    for item in left:
        print(f"left: {item}", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
