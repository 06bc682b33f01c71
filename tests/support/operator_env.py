"""What the end-to-end tests work with: `Env` (a namespace with the S3 Secret and the operator running in-cluster
on the real node, shard pods of the CPU inference image reaching the session's S3 through the S3 gate), an
operator pod not yet started (`new_operator`) and the `ocrjob` CLI run as a pipeline runs it (`run_cli`). The
fixtures that make them are in operator_fixtures.py."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_pod.job import layout
from inference_pod.local.samples import generate_corpus
from tests.support.cluster import LocalCluster
from tests.support.operator_deploy import OperatorPod
from tests.support.operator_harness import Jobs, PodRecorder, ocrjob, upload_dir
from tests.support.procs import wait_until
from tests.support.s3gate import S3Gate

SMALL_PAGE = (640, 400)  # OCR on this machine's 2 CPU cores: keep pages small
# A fault must land while a shard is midway: the S3 gate holds the download of the middle document (`hold_midway`),
# so the shard has finished some documents and cannot finish the rest however fast its engine is.
MIDWAY_DOCUMENTS = 8
OCRJOB = str(Path(sys.executable).with_name("ocrjob"))  # the console script, as installed
INFERENCE_IMAGE = "inference-cpu"  # tests.support.images names
OPERATOR_IMAGE = "operator"


def new_operator(cluster: LocalCluster, namespace: str, workdir: Path, args: tuple[str, ...] = (),
                 name: str = "operator", memory_limit: str | None = None) -> OperatorPod:
    """An operator pod watching `namespace`, not started yet (`start()` it)."""
    assert cluster.real_node is not None
    return OperatorPod(cluster.api_client, namespace, cluster.real_node_image(OPERATOR_IMAGE), workdir,
                       sigkill=cluster.real_node.sigkill, args=args, name=name, memory_limit=memory_limit)


@dataclass
class Env:
    cluster: LocalCluster
    namespace: str
    jobs: Jobs
    operator: OperatorPod
    pods: PodRecorder
    s3: Any
    bucket: str
    endpoint: str  # S3 as pods (and the operator) reach it: through the gate
    gate: S3Gate
    image: str  # the CPU inference image on the node
    admin_kubeconfig: Path
    tmp: Path

    def job(self, name: str, **spec: Any) -> dict[str, Any]:
        return ocrjob(name, self.namespace, self.bucket, self.endpoint, self.image, **spec)

    def upload(self, count: int, seed: int, prefix: str = "in") -> dict[str, list[str]]:
        folder = self.tmp / f"docs-{prefix}-{seed}"
        corpus = generate_corpus(folder, count, seed=seed, size=SMALL_PAGE)
        upload_dir(self.s3, self.bucket, prefix, folder)
        return corpus

    def result(self, key: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def hold_midway(self, prefix: str = "in") -> str:
        """Hold the download of the middle document under `prefix` (in key order, the shard's order) until
        `gate.release()`; its key."""
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{prefix}/").get("Contents") or []
        keys = sorted(obj["Key"] for obj in listed)
        assert len(keys) >= 3, f"hold_midway needs documents before and after the held one, got {keys}"
        self.gate.hold(keys[len(keys) // 2])
        return keys[len(keys) // 2]

    def heartbeat(self, job: str, shard: int = 0) -> dict[str, Any] | None:
        """The shard's last heartbeat in S3 (None before its first)."""
        uid = self.jobs.get(job)["metadata"]["uid"]
        try:
            return self.result(f"out/{layout.progress_key(uid, shard)}")
        except self.s3.exceptions.NoSuchKey:
            return None

    def midway(self, job: str, pod: str, total: int = MIDWAY_DOCUMENTS, shard: int = 0) -> bool:
        """Whether `pod`'s heartbeat says it has finished some but not all of its `total` documents."""
        beat = self.heartbeat(job, shard) or {}
        items = beat.get("items") or {}
        done = sum(int(items.get(k) or 0) for k in ("ok", "failed", "skipped"))
        return beat.get("pod") == pod and 1 <= done < total

    def wait_midway(self, job: str, pod: str, total: int = MIDWAY_DOCUMENTS, timeout: float = 240) -> None:
        wait_until(lambda: self.midway(job, pod, total), timeout=timeout, interval=0.3,
                   what=f"{pod} to be midway through its {total} documents")

    def running_pods(self, job: str) -> list[str]:
        def running(pod: dict[str, Any]) -> bool:
            status = pod.get("status") or {}
            return status.get("phase") == "Running" and any(
                (c.get("state") or {}).get("running") is not None for c in status.get("containerStatuses") or [])

        return [p["metadata"]["name"] for p in self.jobs.pods(job) if running(p)]


def run_cli(shell: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([OCRJOB, *args], env=shell, capture_output=True, text=True, timeout=timeout)
    print(f"$ ocrjob {' '.join(args)}  # exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def job_flags(env: Env, **extra: str) -> list[str]:
    """A small CPU job over s3://<bucket>/in, as flags."""
    flags = {"--input": f"s3://{env.bucket}/in", "--output": f"s3://{env.bucket}/out", "--image": env.image,
             "--device": "cpu", "--shards": "1", "--s3-endpoint": env.endpoint, "--s3-region": "us-east-1",
             "--credentials-secret": "s3-credentials", "--request": "cpu=500m", "--retries": "1", "--backoff": "1s",
             "--det-limit-side-len": "640", **extra}
    # The node has the image and no registry: never pull it.
    return [part for item in flags.items() for part in item] + ["--set", "imagePullPolicy=Never"]
