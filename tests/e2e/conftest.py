"""Fixtures shared by the end-to-end suites: the CRD and RBAC installed, the operator's own kubeconfig,
the bundled models for shard pods, and `env` — a namespace with the S3 Secret and a running operator."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inference_pod.job.settings import ENGINE_PADDLE
from inference_pod.local.samples import generate_corpus
from ocrjob_operator.api.client import Client
from tests.e2e.operator_harness import (
    Jobs,
    OperatorProcess,
    PodRecorder,
    grant_operator,
    install,
    ocrjob,
    operator_kubeconfig,
    upload_dir,
)
from tests.support.procs import tail, wait_until

SMALL_PAGE = (640, 400)  # OCR on this machine's 2 CPU cores: keep pages small
# A fault must land while a shard is midway, seen in its 5-s heartbeat: on ONNX Runtime (the default) a shard
# of a few small pages can finish between two heartbeats; Paddle's engine is several times slower per page.
# And enough pages that the shard runs for several heartbeats even when it is fast.
MIDWAY_OCR = {"detLimitSideLen": 640, "engine": ENGINE_PADDLE}
MIDWAY_DOCUMENTS = 16


@pytest.fixture(scope="session")
def k8s_client(cluster: Any) -> Client:
    """A cluster-admin `Client`: the same client (and error types) as the operator and the CLI."""
    return cluster.client()


@pytest.fixture(scope="module")
def installed(cluster: Any) -> Path:
    install(cluster.kubeconfig)
    return cluster.kubeconfig


@pytest.fixture(scope="module")
def op_kubeconfig(installed: Path, k8s_client: Client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return operator_kubeconfig(k8s_client, installed, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="module")
def models_env(ocr_models: Any) -> Iterator[None]:
    """Shard pods without spec.models use the image's bundled models: here OCRJOB_MODELS_DIR, which the
    process node passes through to every pod process."""
    old = os.environ.get("OCRJOB_MODELS_DIR")
    os.environ["OCRJOB_MODELS_DIR"] = str(Path(ocr_models.det_dir).parent)
    yield
    if old is None:
        os.environ.pop("OCRJOB_MODELS_DIR", None)
    else:
        os.environ["OCRJOB_MODELS_DIR"] = old


@dataclass
class Env:
    cluster: Any
    namespace: str
    jobs: Jobs
    operator: OperatorProcess
    pods: PodRecorder
    s3: Any
    bucket: str
    endpoint: str
    admin_kubeconfig: Path
    tmp: Path

    def job(self, name: str, **spec: Any) -> dict[str, Any]:
        return ocrjob(name, self.namespace, self.bucket, self.endpoint, **spec)

    def upload(self, count: int, seed: int, prefix: str = "in") -> dict[str, list[str]]:
        folder = self.tmp / f"docs-{prefix}-{seed}"
        corpus = generate_corpus(folder, count, seed=seed, size=SMALL_PAGE)
        upload_dir(self.s3, self.bucket, prefix, folder)
        return corpus

    def result(self, key: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def running_pods(self, job: str) -> list[str]:
        def running(pod: dict[str, Any]) -> bool:
            status = pod.get("status") or {}
            return status.get("phase") == "Running" and any(
                (c.get("state") or {}).get("running") is not None for c in status.get("containerStatuses") or [])

        return [p["metadata"]["name"] for p in self.jobs.pods(job) if running(p)]


@pytest.fixture
def env(cluster: Any, k8s_client: Client, namespace: str, s3_server: Any, s3_bucket: str,
        op_kubeconfig: Path, models_env: None, tmp_path: Path) -> Iterator[Env]:
    jobs = Jobs(k8s_client, namespace)
    jobs.create_secret(s3_server.access_key, s3_server.secret_key)
    grant_operator(cluster.kubeconfig, namespace)
    operator = OperatorProcess(op_kubeconfig, namespace, tmp_path)
    pods = PodRecorder(cluster.api_client, namespace).start()
    try:
        operator.start()
        yield Env(cluster, namespace, jobs, operator, pods, s3_server.client(), s3_bucket, s3_server.endpoint,
                  cluster.kubeconfig, tmp_path)
    finally:
        # Remove the jobs while the operator still runs (it owns their finalizer), then stop it.
        try:
            for job in jobs.listed():
                jobs.delete(job["metadata"]["name"])
            if operator.running():
                wait_until(lambda: not jobs.listed(), timeout=60, what="OcrJobs to be deleted")
        finally:
            operator.stop()
            pods.stop()
            print(f"--- operator log ({operator.log}) ---\n{tail(operator.log, 150)}")
            if pods.errors:
                print("--- pod recorder errors ---\n" + "\n".join(pods.errors[-20:]))
