"""The sample job `make cluster-up` leaves ready: generated documents in SeaweedFS, a Secret with the S3 keys
in the `default` namespace, and an OcrJob manifest for the CPU inference image (`kubectl apply -f` it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inference_pod.local.samples import generate_corpus
from ocrjob_operator.api.names import GROUP, VERSION

SAMPLE_BUCKET = "samples"
SAMPLE_NAMESPACE = "default"
SAMPLE_DOCUMENTS = 6
SAMPLE_JOB = "sample"
SECRET_NAME = "sample-s3"


def prepare(s3: Any, endpoint_in_cluster: str, inference_image: str, workdir: Path) -> Path:
    """Upload the documents (idempotent) and write `<workdir>/sample-ocrjob.yaml`; returns its path."""
    s3.create_bucket(SAMPLE_BUCKET)
    client = s3.client()
    folder = workdir / "sample-documents"
    generate_corpus(folder, SAMPLE_DOCUMENTS, seed=1, size=(640, 400))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), SAMPLE_BUCKET, f"in/{path.relative_to(folder).as_posix()}")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET_NAME, "namespace": SAMPLE_NAMESPACE},
              "type": "Opaque", "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key,
                                               "AWS_SECRET_ACCESS_KEY": s3.secret_key}}
    job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OcrJob",
           "metadata": {"name": SAMPLE_JOB, "namespace": SAMPLE_NAMESPACE},
           "spec": {"input": {"uri": f"s3://{SAMPLE_BUCKET}/in"}, "output": {"uri": f"s3://{SAMPLE_BUCKET}/out"},
                    "s3": {"endpoint": endpoint_in_cluster, "region": "us-east-1",
                           "credentialsSecret": {"name": SECRET_NAME}},
                    "image": inference_image, "imagePullPolicy": "Never", "device": "cpu",
                    "sharding": {"shardCount": 2}, "parallelism": 2,
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}}
    path = workdir / "sample-ocrjob.yaml"
    path.write_text("# Written by `make cluster-up`: kubectl apply -f this; kubectl get ocr -w\n"
                    + yaml.safe_dump_all([secret, job], sort_keys=False))
    return path
