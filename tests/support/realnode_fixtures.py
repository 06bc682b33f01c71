"""pytest fixtures for a local cluster with a real node (kubelet + containerd, realnode.py), separate from the
process-node `cluster` fixture (both may run in one session: they share nothing but the machine).

    real_cluster    session: a started `LocalCluster` with real node `ocrjob-node-0` (2 fake GPUs from the
                    device plugin, the base image imported) and its own SeaweedFS exposed to pods
    real_core       session: a cluster-admin CoreV1Api for the test thread
    real_namespace  function: a fresh namespace (default ServiceAccount present), deleted afterwards

Skipped, saying why, where a real node cannot run (not root, containerd/runc/iptables missing: `make node-deps`).
A failing test's report gets the tails of the kubelet, containerd and device-plugin logs and of its pods' logs.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.cluster import LocalCluster
from tests.support.cluster_fixtures import running
from tests.support.procs import tail, wait_until
from tests.support.realnode import real_gpu_node_spec

REAL_NODE_GPUS = 2
REQUIRED_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip", "buildah", "gcc")
LOG_TAIL_LINES = 120
_running: list[LocalCluster] = []


def real_node_unavailable() -> str | None:
    """Why a real node cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "a real node (kubelet + containerd) needs root"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (run `make node-deps`)" if missing else None


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    reason = real_node_unavailable()
    if reason:
        pytest.skip(reason)
    local = LocalCluster(tmp_path_factory.mktemp("real-cluster"), real_node=real_gpu_node_spec(gpus=REAL_NODE_GPUS),
                         with_s3=True)
    with running(local, _running) as started:
        yield started


@pytest.fixture(scope="session")
def real_core(real_cluster: LocalCluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(real_cluster.api_client())


@pytest.fixture
def real_namespace(real_core: kubernetes.client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    real_core.create_namespace({"metadata": {"name": name, "labels": {"ocrjob.dev/test": "true"}}})
    wait_until(lambda: real_core.read_namespaced_service_account("default", name), timeout=30,
               what=f"ServiceAccount default in {name}")
    yield name
    with contextlib.suppress(ApiException):
        real_core.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.failed and _running and "real_cluster" in getattr(item, "fixturenames", ()):
        ns = getattr(item, "funcargs", {}).get("real_namespace")
        for local in _running:
            for name, path in local.logs().items():
                if name.startswith("pod ") and ns and not name.startswith(f"pod {ns}/"):
                    continue  # other tests' pods
                report.sections.append((f"{name} log (last {LOG_TAIL_LINES} lines)", tail(path, LOG_TAIL_LINES)))
    return report
