"""The real node's configuration, as pure functions: what this machine kind needs is in it."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

from tests.support.controlplane import SERVICE_CIDR
from tests.support.nodeconfig import CNI_BIN_DIR, ContainerdPaths, KubeletSettings, containerd_toml, kubelet_config
from tests.support.podnet import GATEWAY, POD_SUBNET, PodNetwork
from tests.support.realnode import gpu_uuids

CRI = "io.containerd.grpc.v1.cri"


def test_containerd_config_is_valid_toml_with_the_settings_this_machine_needs(tmp_path: Path) -> None:
    paths = ContainerdPaths.under(tmp_path)
    config = tomllib.loads(containerd_toml(paths, "localhost/ocrjob-pause:abc"))
    cri = config["plugins"][CRI]
    assert (config["root"], config["state"], config["grpc"]["address"]) == (
        str(paths.root), str(paths.state), str(paths.socket))
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == "localhost/ocrjob-pause:abc"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"] == {"bin_dir": CNI_BIN_DIR, "conf_dir": str(paths.cni_conf_dir), "max_conf_num": 1}
    assert cri["stream_server_address"] == "127.0.0.1"


def test_kubelet_config_serves_on_the_gateway_and_never_collects_images(tmp_path: Path) -> None:
    settings = KubeletSettings(address=GATEWAY, port=1, healthz_port=2, client_ca=tmp_path / "ca",
                               tls_cert=tmp_path / "c", tls_key=tmp_path / "k", runtime_socket=tmp_path / "s",
                               resolv_conf=tmp_path / "r",
                               pod_logs_dir=tmp_path / "logs", taints=({"key": "k", "effect": "NoSchedule"},))
    config = kubelet_config(settings)
    assert (config["address"], config["readOnlyPort"], config["healthzBindAddress"]) == (GATEWAY, 0, "127.0.0.1")
    assert (config["cgroupDriver"], config["failCgroupV1"], config["failSwapOn"]) == ("cgroupfs", False, False)
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["registerWithTaints"] == [{"key": "k", "effect": "NoSchedule"}]
    assert config["containerRuntimeEndpoint"] == f"unix://{tmp_path / 's'}"


def test_cni_routes_only_the_service_cidr_and_no_default_route(tmp_path: Path) -> None:
    bridge = PodNetwork().cni_conflist(tmp_path)["plugins"][0]  # type: ignore[index]
    assert bridge["isDefaultGateway"] is False and bridge["ipMasq"] is False
    assert bridge["ipam"]["routes"] == [{"dst": SERVICE_CIDR, "gw": GATEWAY}]
    assert bridge["ipam"]["ranges"] == [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]]


def test_gpu_ids_look_like_nvidia_uuids_and_are_stable_per_node() -> None:
    ids = gpu_uuids("node-a", 3)
    assert len(set(ids)) == 3
    assert all(re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", i) for i in ids)
    assert gpu_uuids("node-a", 3) == ids and not set(gpu_uuids("node-b", 3)) & set(ids)
