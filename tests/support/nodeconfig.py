"""Configuration files of the real node, as pure functions: containerd's config.toml and the kubelet's
KubeletConfiguration. Every setting this machine kind needs is explained in /work/shared/REAL-NODE.md's terms
next to it. No I/O, no kubernetes imports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
# Low enough that the node never evicts on this shared machine by accident; a test raises one to trigger it.
DEFAULT_EVICTION_HARD = {"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%", "imagefs.inodesFree": "1%"}


@dataclass(frozen=True)
class ContainerdPaths:
    root: Path
    state: Path
    socket: Path
    cni_conf_dir: Path

    @classmethod
    def under(cls, directory: Path) -> ContainerdPaths:
        return cls(directory / "root", directory / "state", directory / "containerd.sock", directory / "net.d")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is JSON-compatible for these values


def containerd_toml(paths: ContainerdPaths, sandbox_image: str) -> str:
    """containerd 1.6 config (version 2): own root/state/socket, CRI with runc and the pod network's CNI."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    sections: dict[str, dict[str, Any]] = {
        "": {"version": 2, "root": paths.root, "state": paths.state,
             # Snapshotters this machine cannot use only log errors at every start.
             "disabled_plugins": ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                                  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]},
        "grpc": {"address": paths.socket},
        "ttrpc": {"address": f"{paths.socket}.ttrpc"},
        cri: {"sandbox_image": sandbox_image,
              # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails ("can't get final child's PID").
              "restrict_oom_score_adj": True,
              "stream_server_address": "127.0.0.1", "stream_server_port": "0",  # exec/attach: loopback only
              "enable_selinux": False, "disable_apparmor": True},
        f"{cri}.containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc"},
        # crun fails on hybrid cgroups here; the kubelet uses cgroupfs, so runc must too.
        f"{cri}.containerd.runtimes.runc": {"runtime_type": "io.containerd.runc.v2"},
        f"{cri}.containerd.runtimes.runc.options": {"SystemdCgroup": False},
        f"{cri}.cni": {"bin_dir": CNI_BIN_DIR, "conf_dir": paths.cni_conf_dir, "max_conf_num": 1},
        f"{cri}.registry": {"config_path": ""},  # no registry is reachable: pods use imagePullPolicy Never
        'plugins."io.containerd.internal.v1.opt"': {"path": paths.root.parent / "opt"},
    }
    lines = []
    for section, values in sections.items():
        if section:
            lines.append(f"\n[{section}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class KubeletSettings:
    """The knobs tests may turn; everything else is fixed by `kubelet_config`."""
    address: str  # serves only here (the pod network gateway), never on 0.0.0.0
    port: int
    healthz_port: int
    client_ca: Path
    tls_cert: Path
    tls_key: Path
    runtime_socket: Path
    resolv_conf: Path
    pod_logs_dir: Path
    cluster_dns: tuple[str, ...] = ()
    max_pods: int = 110
    taints: tuple[dict[str, str], ...] = ()
    eviction_hard: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EVICTION_HARD))
    system_reserved: dict[str, str] = field(default_factory=dict)  # shrinks allocatable below the machine's


def kubelet_config(s: KubeletSettings) -> dict[str, Any]:
    """A KubeletConfiguration (kubelet.config.k8s.io/v1beta1) as a dict, for `--config`."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": s.address, "port": s.port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": s.healthz_port,
        "tlsCertFile": str(s.tls_cert), "tlsPrivateKeyFile": str(s.tls_key),
        # The apiserver authenticates with its kubelet client cert (same CA); everything else by token review.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True, "cacheTTL": "10s"},
                           "x509": {"clientCAFile": str(s.client_ca)}},
        "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "10s",
                                                         "cacheUnauthorizedTTL": "5s"}},
        "containerRuntimeEndpoint": f"unix://{s.runtime_socket}",
        "cgroupDriver": "cgroupfs", "failCgroupV1": False,  # no systemd; this machine is cgroup v1 (hybrid)
        "failSwapOn": False,
        "resolvConf": str(s.resolv_conf),  # no nameservers: the host's do not leak into dnsPolicy Default
        "clusterDomain": "cluster.local", "clusterDNS": list(s.cluster_dns),
        "podLogsDir": str(s.pod_logs_dir),
        # Imported images cannot be pulled again: image GC must never remove them.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99, "imageMinimumGCAge": "87600h",
        # Short loops: a node/pod change shows in the API within a few seconds.
        "nodeStatusUpdateFrequency": "2s", "nodeStatusReportFrequency": "10s", "syncFrequency": "10s",
        "fileCheckFrequency": "20s", "runtimeRequestTimeout": "2m",
        "evictionHard": dict(s.eviction_hard), "evictionPressureTransitionPeriod": "5s",
        "evictionMaxPodGracePeriod": 5,
        "maxPods": s.max_pods, "registerWithTaints": [dict(t) for t in s.taints],
        "systemReserved": dict(s.system_reserved),
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",  # no systemd inhibitor locks here
    }
