"""pytest fixtures for the real local control plane with one GPU process node.

    cluster     session: a started `LocalCluster` (kubeconfig, api_client(), node, add_node(), logs())
    k8s_api     session: a cluster-admin `kubernetes.client.ApiClient` for the test thread
    namespace   function: a fresh namespace (default ServiceAccount present), deleted afterwards

S3 is not part of `cluster`: use the `s3_server` fixture (tests/support/s3_fixtures.py).
When a test that uses `cluster` fails, the tails of all component logs, the process-node logs and the
logs of the pods in its namespace (and in namespaces no other test made, e.g. an operator's) are attached
to the report. Missing control-plane binaries are built after collection (scripts/build-control-plane.sh).
"""

from __future__ import annotations

import atexit
import contextlib
import re
import secrets
from collections.abc import Iterator

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.cluster import LocalCluster
from tests.support.controlplane import control_plane_bin_dir
from tests.support.processnode import gpu_node_spec
from tests.support.procs import tail, wait_until

LOG_TAIL_LINES = 200
_clusters: list[LocalCluster] = []  # started (or starting) in this session, for failure reports
_test_namespaces: set[str] = set()  # made by the `namespace` fixture; other namespaces (an operator's) are shared


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing control-plane binaries before any test runs: a cold build (~15 min on 2 cores) would
    otherwise count against the first test's pytest-timeout. A no-op when they are cached."""
    if session.config.option.collectonly:
        return
    if any({"cluster", "real_cluster"} & set(getattr(item, "fixturenames", ())) for item in session.items):
        control_plane_bin_dir()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """etcd, apiserver, controller-manager, scheduler and node `ocrjob-node-0` (cpu 8, 16Gi, 2 fake GPUs)."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), nodes=[gpu_node_spec("ocrjob-node-0", gpus=2)])
    with running(local, _clusters) as started:
        yield started


@contextlib.contextmanager
def running(local: LocalCluster, registry: list[LocalCluster]) -> Iterator[LocalCluster]:
    """Start `local`, listed in `registry` (for failure reports) while it runs; stopped however the session ends."""
    atexit.register(local.stop)  # last resort if the session dies before teardown
    registry.append(local)
    try:
        yield local.start()
    finally:
        local.stop()
        registry.remove(local)
        atexit.unregister(local.stop)


@pytest.fixture(scope="session")
def k8s_api(cluster: LocalCluster) -> kubernetes.client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def namespace(k8s_api: kubernetes.client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    core = kubernetes.client.CoreV1Api(k8s_api)
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    _test_namespaces.add(name)
    core.create_namespace({"metadata": {"name": name, "labels": {"ocrjob.dev/test": "true"}}})
    # Pod admission needs the ServiceAccount the serviceaccount controller creates.
    wait_until(lambda: core.read_namespaced_service_account("default", name), timeout=30,
               what=f"ServiceAccount default in {name}")
    yield name
    with contextlib.suppress(ApiException):  # pods are stopped by the namespace controller + process node
        core.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.failed and _clusters and "cluster" in getattr(item, "fixturenames", ()):
        ns = getattr(item, "funcargs", {}).get("namespace")
        for local in _clusters:
            for name, path in local.logs().items():
                pod_ns = name.split(" ", 1)[1].split("/")[0] if name.startswith("pod ") else None
                if pod_ns is None or pod_ns == ns or pod_ns not in _test_namespaces:  # not other tests' pods
                    report.sections.append((f"{name} log (last {LOG_TAIL_LINES} lines)",
                                            tail(path, LOG_TAIL_LINES)))
    return report
