"""pytest fixtures for the real local cluster: control plane + real node `ocrjob-node-0` (kubelet + containerd,
2 fake GPUs from the device plugin, realnode.py), its pods reaching the session's SeaweedFS (`s3_server`).

    cluster     session: a started `LocalCluster` (kubeconfig, api_client(), client(), real_node,
                real_node_image(name), s3, s3_endpoint_in_cluster, logs())
    k8s_api     session: a cluster-admin `kubernetes.client.ApiClient` for the test thread
    core        session: a cluster-admin CoreV1Api for the test thread
    namespace   function: a fresh namespace (default ServiceAccount present), deleted afterwards
    priority_classes
                function: a low and a high PriorityClass (cluster-scoped), deleted afterwards

Skipped, saying why, where a real node cannot run (not root, containerd/runc/iptables missing: `make node-deps`).
When a test that uses `cluster` fails, the tails of the component logs, the kubelet, containerd and device-plugin
logs and the logs of the pods in its namespace (and in namespaces no test made, e.g. the operator's) are attached
to its report. Missing control-plane binaries and images are built after collection, before the first test.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.cluster import LocalCluster
from tests.support.controlplane import control_plane_bin_dir
from tests.support.procs import tail, wait_until
from tests.support.realnode import real_gpu_node_spec

REAL_NODE_GPUS = 2
REQUIRED_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip", "buildah", "gcc")
# Built before the first test (a cold inference-cpu build takes minutes: not inside a test's timeout).
SESSION_IMAGES = ("pause", "base", "python-base", "operator", "inference-cpu")
LOG_TAIL_LINES = 200
_clusters: list[LocalCluster] = []  # started (or starting) in this session, for failure reports
_test_namespaces: set[str] = set()  # made by the `namespace` fixture; other namespaces (an operator's) are shared


def real_node_unavailable() -> str | None:
    """Why a real node cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "a real node (kubelet + containerd) needs root"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (run `make node-deps`)" if missing else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `walk` start a cluster of their own (`make cluster-up`'s): they run first, before the
    session's `cluster` takes the machine's one real node."""
    items.sort(key=lambda item: item.get_closest_marker("walk") is None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing control-plane binaries and images before any test runs: cold builds (~15 min on 2 cores)
    would otherwise count against the first test's pytest-timeout. A no-op when they are cached."""
    if session.config.option.collectonly:
        return
    if any("cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        control_plane_bin_dir()
        if real_node_unavailable() is None:
            from tests.support import images

            for name in SESSION_IMAGES:
                images.ensure(name)


@pytest.fixture(scope="session")
def cluster(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    reason = real_node_unavailable()
    if reason:
        pytest.skip(reason)
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), real_node=real_gpu_node_spec(gpus=REAL_NODE_GPUS),
                         s3=s3_server)
    with running(local, _clusters) as started:
        yield started


@contextlib.contextmanager
def running(local: LocalCluster, registry: list[LocalCluster]) -> Iterator[LocalCluster]:
    """Start `local`, listed in `registry` (for failure reports) while it runs; stopped however the session ends."""
    import atexit

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


@pytest.fixture(scope="session")
def core(k8s_api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(k8s_api)


@pytest.fixture
def namespace(core: kubernetes.client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    _test_namespaces.add(name)
    core.create_namespace({"metadata": {"name": name, "labels": {"ocrjob.dev/test": "true"}}})
    # Pod admission needs the ServiceAccount the serviceaccount controller creates.
    wait_until(lambda: core.read_namespaced_service_account("default", name), timeout=30,
               what=f"ServiceAccount default in {name}")
    yield name
    with contextlib.suppress(ApiException):  # its pods are stopped by the namespace controller + kubelet
        core.delete_namespace(name)


@pytest.fixture
def priority_classes(k8s_api: kubernetes.client.ApiClient) -> Iterator[tuple[str, str]]:
    scheduling = kubernetes.client.SchedulingV1Api(k8s_api)
    suffix = secrets.token_hex(3)
    names = (f"ocrjob-low-{suffix}", f"ocrjob-high-{suffix}")
    for name, value in zip(names, (100, 100000), strict=True):
        scheduling.create_priority_class({"metadata": {"name": name}, "value": value})
    yield names
    for name in names:
        with contextlib.suppress(ApiException):
            scheduling.delete_priority_class(name)


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
