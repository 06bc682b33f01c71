"""Spec parsing: defaults, and an error that names the field and the fix for everything a user can get wrong."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from inference_pod.job.plan import MAX_SHARDS
from ocrjob_operator.api import fields as F
from ocrjob_operator.api.spec import SpecError, output_inside_input, parse_quantity, parse_spec

BASE: dict[str, Any] = {
    "input": {"uri": "s3://bucket/scans"},
    "output": {"uri": "s3://bucket/results"},
    "image": "registry.example.com/ocrjob-inference-gpu:0.1.0",
    "sharding": {"shardCount": 4},
}


def with_(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = spec
        parts = path.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return spec


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec(BASE)
    assert (spec.input_uri, spec.output_uri, spec.shard_count) == ("s3://bucket/scans", "s3://bucket/results", 4)
    assert (spec.device, spec.parallelism, spec.workers_per_pod) == (
        F.default("device"), F.default("parallelism"), F.default("workersPerPod"))
    assert (spec.retries, spec.backoff_seconds, spec.stall_timeout_seconds) == (
        F.default("retries.perShard"), F.default("retries.backoffSeconds"), F.default("stallTimeoutSeconds"))
    assert spec.shard_deadline_seconds is None and spec.ttl_seconds_after_finished is None
    assert (spec.suspend, spec.pod_cleanup_policy) == (F.default("suspend"), F.default("podCleanupPolicy"))
    assert spec.s3.credentials is None and spec.models is None and spec.s3.path_style is F.default("s3.pathStyle")
    assert spec.image_pull_policy is None
    for declared in F.FIELDS:
        if declared.path.startswith("ocr."):
            assert getattr(spec.ocr, declared.setting) == declared.default, declared.path  # type: ignore[arg-type]
    assert spec.ocr.page_batch_size == F.default("ocr.pageBatchSize") is not None


def test_full_spec() -> None:
    spec = parse_spec(with_(
        input__manifest="s3://other/failed.json", s3={"endpoint": "http://minio:9000", "region": "eu-west-1",
                                                      "credentialsSecret": {"name": "s3-creds"}},
        sharding={"targetShardSize": "2Gi"}, parallelism=8, device="cpu", workersPerPod=2,
        models={"detection": {"name": "PP-OCRv4_server_det", "location": "s3://models/det"},
                "recognition": {"name": "PP-OCRv4_server_rec", "location": "/models/rec"}},
        resources={"limits": {"memory": "24Gi"}}, queueName="team-a", retries={"perShard": 5},
        shardDeadlineSeconds=3600, ttlSecondsAfterFinished=60, suspend=True, podCleanupPolicy="Keep",
    ))
    assert spec.target_shard_bytes == 2 << 30 and spec.shard_count is None
    assert spec.s3.credentials is not None and spec.s3.credentials.access_key_id_key == "AWS_ACCESS_KEY_ID"
    assert spec.models is not None and spec.models.det_location == "s3://models/det"
    assert (spec.parallelism, spec.device, spec.retries, spec.queue_name) == (8, "cpu", 5, "team-a")
    assert spec.input_manifest == "s3://other/failed.json" and spec.suspend


@pytest.mark.parametrize(("changes", "needle"), [
    ({"output__uri": "s3://bucket/scans/out"}, "inside spec.input.uri"),
    ({"output__uri": "s3://bucket/scans"}, "inside spec.input.uri"),
    ({"output__uri": "s3://bucket/scans/"}, "inside spec.input.uri"),
    ({"output__uri": "s3://bucket"}, "contains spec.input.uri"),
    ({"output__uri": "s3://bucket/"}, "contains spec.input.uri"),
    ({"input__uri": "s3://bucket/scans/in", "output__uri": "s3://bucket/scans/"}, "contains spec.input.uri"),
    ({"input__uri": "s3://bucket/a/./scans"}, "e.g. 's3://bucket/a/scans'"),
    ({"output__uri": "s3://bucket/x/../out"}, "e.g. 's3://bucket/out'"),
    ({"output__uri": "s3://bucket/.."}, "'.' or '..' segment"),
    ({"input__manifest": "s3://bucket/lists/../keys.txt"}, "e.g. 's3://bucket/keys.txt'"),
    ({"retries": {"infrastructureTimeoutSeconds": 10}}, "between 60 and 604800"),
    ({"scheduling": {"unschedulableTimeoutSeconds": -1}}, "between 0 and 604800"),
    ({"input__uri": "bucket/scans"}, "s3://bucket/prefix"),
    ({"input__uri": "s3://bucket/a//scans"}, "s3://bucket/prefix"),
    ({"input__uri": "s3://bucket//scans"}, "s3://bucket/prefix"),
    ({"output__uri": "s3://B/x"}, "s3://bucket/prefix"),
    ({"input__manifest": "s3://bucket/"}, "s3://bucket/key"),
    ({"sharding": {"shardCount": 2, "targetShardSize": "1Gi"}}, "exactly one"),
    ({"sharding": {}}, "exactly one"),
    ({"sharding": {"shardCount": 0}}, f"between 1 and {MAX_SHARDS}"),
    ({"sharding": {"targetShardSize": "10Ki"}}, "between 1Mi and 1Ti"),
    ({"sharding": {"targetShardSize": "lots"}}, "not a size"),
    ({"parallelism": 5000}, "between 1 and 1000"),
    ({"parallelism": "2"}, "not an integer"),
    ({"device": "tpu"}, "one of gpu, cpu"),
    ({"resources": {"limits": {"nvidia.com/gpu": 2}}}, "remove nvidia.com/gpu"),
    ({"models": {"detection": {"name": "x", "location": "/m"}}}, "both detection and recognition"),
    ({"models": {"detection": {"name": "d", "location": "models/det"},
                 "recognition": {"name": "r", "location": "/m"}}}, "absolute directory"),
    ({"image": None}, "spec.image is required"),
    ({"s3": {"credentialsSecret": {"name": "Bad_Name"}}}, "Secret in the job's namespace"),
    ({"queueName": "not a label!"}, "LocalQueue"),
    ({"stallTimeoutSeconds": 1}, "between 10 and 86400"),
    ({"ocr": {"maxPixels": 0}}, "between 1 and 400000000"),
    ({"ocr": {"maxItemBytes": 0}}, "between 1 and 4294967296"),
    ({"imagePullPolicy": "Sometimes"}, "use one of Always, IfNotPresent, Never"),
    ({"podCleanupPolicy": "Never"}, "use one of DeleteSucceeded, Delete, Keep"),
])
def test_invalid_specs_say_what_to_fix(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match="spec") as err:
        parse_spec(with_(**changes))
    assert needle in str(err.value)


def test_a_sibling_or_dotted_name_is_not_a_dot_segment() -> None:
    spec = parse_spec(with_(input__uri="s3://bucket/scans.v2/..x", output__uri="s3://bucket/scans-out/.hidden"))
    assert spec.output_uri == "s3://bucket/scans-out/.hidden"
    assert spec.infrastructure_timeout_seconds == F.default("retries.infrastructureTimeoutSeconds")
    assert spec.unschedulable_timeout_seconds == F.default("scheduling.unschedulableTimeoutSeconds") > 0


def test_output_inside_input_rule_matches_prefix_semantics() -> None:
    assert output_inside_input("s3://b/in", "s3://b/in/out")
    assert output_inside_input("s3://b", "s3://b/anything")
    assert not output_inside_input("s3://b/in", "s3://b/in-results")
    assert not output_inside_input("s3://b/in", "s3://c/in")


def test_quantities() -> None:
    assert parse_quantity("512Mi", "x") == 512 << 20
    assert parse_quantity("2G", "x") == 2_000_000_000
    assert parse_quantity("1.5Gi", "x") == int(1.5 * (1 << 30))
    assert parse_quantity("1048576", "x") == 1 << 20
