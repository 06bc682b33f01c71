"""pytest fixtures for the end-to-end suites: the CRD, RBAC and admission policies installed from manifests/, and
`env` (operator_env.Env) — a namespace with the S3 Secret and the operator running in-cluster on the real node
(its image, the manifests' pod template, its ServiceAccount), shard pods of the CPU inference image reaching the
session's S3.

    k8s_client      session: a cluster-admin `Client` (the operator's and the CLI's own client)
    installed       module: the admin kubeconfig, once manifests/ is installed
    op_kubeconfig   module: a kubeconfig with the operator's ServiceAccount token
    s3_gate         session: the S3 gate in front of SeaweedFS and its in-cluster endpoint
    env             function: `Env`; jobs deleted and the operator stopped (its log printed) afterwards
    shell           function: a pipeline's environment ($KUBECONFIG naming the namespace, AWS_* credentials)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocrjob_operator.api.client import Client
from tests.support.cluster import LocalCluster
from tests.support.operator_env import INFERENCE_IMAGE, Env, new_operator
from tests.support.operator_harness import Jobs, PodRecorder, grant_operator, install, operator_kubeconfig
from tests.support.procs import tail, wait_until
from tests.support.s3gate import S3Gate


@pytest.fixture(scope="session")
def k8s_client(cluster: LocalCluster) -> Client:
    """A cluster-admin `Client`: the same client (and error types) as the operator and the CLI."""
    return cluster.client()


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster) -> Path:
    install(cluster.kubeconfig)
    return cluster.kubeconfig


@pytest.fixture(scope="module")
def op_kubeconfig(installed: Path, k8s_client: Client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig with a token of the operator's ServiceAccount: requests made with the operator's rights."""
    return operator_kubeconfig(k8s_client, installed, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="session")
def s3_gate(cluster: LocalCluster) -> Iterator[tuple[S3Gate, str]]:
    """The S3 gate (tests/support/s3gate.py) in front of the session's SeaweedFS, and its endpoint as pods reach it."""
    gate = S3Gate(cluster.s3.ports["s3"]).start()
    try:
        yield gate, cluster.expose(gate.port)
    finally:
        gate.stop()


@pytest.fixture
def env(cluster: LocalCluster, installed: Path, k8s_client: Client, namespace: str, s3_server: Any,
        s3_bucket: str, s3_gate: tuple[S3Gate, str], tmp_path: Path) -> Iterator[Env]:
    jobs = Jobs(k8s_client, namespace)
    jobs.create_secret(s3_server.access_key, s3_server.secret_key)
    grant_operator(cluster.kubeconfig, namespace)
    operator = new_operator(cluster, namespace, tmp_path)
    gate, endpoint = s3_gate
    image = cluster.real_node_image(INFERENCE_IMAGE)
    pods = PodRecorder(cluster.api_client, namespace).start()
    try:
        operator.start()
        yield Env(cluster, namespace, jobs, operator, pods, s3_server.client(), s3_bucket, endpoint, gate, image,
                  cluster.kubeconfig, tmp_path)
    finally:
        # Remove the jobs while the operator still runs (it owns their finalizer), then stop it.
        try:
            for job in jobs.listed():
                jobs.delete(job["metadata"]["name"])
            if operator.running():
                wait_until(lambda: not jobs.listed(), timeout=60, what="OcrJobs to be deleted")
        finally:
            gate.release()
            operator.stop()
            pods.stop()
            print(f"--- operator log ({operator.log}) ---\n{tail(operator.log, 150)}")
            if pods.errors:
                print("--- pod recorder errors ---\n" + "\n".join(pods.errors[-20:]))


@pytest.fixture
def shell(cluster: Any, namespace: str, s3_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A pipeline's environment: $KUBECONFIG whose context names the namespace, S3 credentials in AWS_*."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for ctx in config["contexts"]:
        ctx["context"]["namespace"] = namespace
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBE", "OCRJOB_S3"))}
    return {**base, **s3_env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
