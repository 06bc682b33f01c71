"""Building OcrJobs for `ocrjob submit` / `ocrjob retry` (pure: no cluster)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from inference_pod.job.plan import parse_input_manifest
from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_cli.flags import (
    ANNOTATION_RETRY_ITEMS,
    ANNOTATION_RETRY_OF,
    ANNOTATION_RETRY_OF_UID,
    LABEL_RETRY_OF,
    SubmitFlags,
    apply_sets,
    build_job,
    generate_prefix,
    parse_duration,
    parse_job_file,
    retry_job,
    retry_manifest,
    retry_manifest_uri,
    secret_requirements,
    spec_from_flags,
)
from ocrjob_operator.api.crd import build_crd
from ocrjob_operator.api.fields import FLAGGED
from ocrjob_operator.api.spec import parse_spec

REPO = Path(__file__).resolve().parents[3]
MINIMAL = {"input": "s3://bucket/in", "output": "s3://bucket/out", "image": "img:1", "shards": 2}


def usage_error(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(CliError) as err:
        fn(*args, **kwargs)
    assert err.value.code is ExitCode.USAGE
    return err.value.message


def test_only_given_flags_become_spec_fields() -> None:
    flags = SubmitFlags(input="s3://bkt/in", shards=3, requests=["cpu=4", "memory=16Gi"], backoff="1m",
                        image_pull_secrets=["regcred"], path_style=False, node_selector=["gpu=a100"])
    assert spec_from_flags(flags) == {
        "input": {"uri": "s3://bkt/in"}, "sharding": {"shardCount": 3},
        "resources": {"requests": {"cpu": 4, "memory": "16Gi"}}, "retries": {"backoffSeconds": 60},
        "imagePullSecrets": [{"name": "regcred"}], "s3": {"pathStyle": False}, "nodeSelector": {"gpu": "a100"},
    }


def _crd_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for name, node in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        paths.add(path)
        paths |= _crd_paths(node, path + ".")
    return paths


def test_submit_flags_are_the_flagged_fields_of_the_api_table() -> None:
    assert [(f.name, f.metadata["path"], f.metadata["flag"]) for f in dataclasses.fields(SubmitFlags)] == [
        (d.name, d.path, d.option) for d in FLAGGED]
    assert all(getattr(SubmitFlags(), f.name) in (None, []) for f in dataclasses.fields(SubmitFlags))


def test_every_flag_names_a_field_of_the_crd() -> None:
    spec_schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    known = _crd_paths(spec_schema)
    for f in dataclasses.fields(SubmitFlags):
        assert f.metadata["path"] in known, f.name


def test_a_job_from_every_flag_is_what_the_operator_parses() -> None:
    flags = SubmitFlags(
        input="s3://bucket/scans", input_manifest="s3://bucket/keys.txt", output="s3://bucket/ocr", image="img:1",
        image_pull_policy="IfNotPresent", image_pull_secrets=["regcred"], s3_endpoint="http://minio:9000",
        s3_region="eu-west-1", path_style=True, credentials_secret="creds", target_shard_size="2Gi", parallelism=4,
        device="cpu", workers_per_pod=2, requests=["cpu=4"], limits=["memory=24Gi"], node_selector=["pool=gpu"],
        priority_class="batch", service_account="ocr", queue="q", det_model_name="det", det_model_dir="/m/det",
        rec_model_name="rec", rec_model_dir="s3://bucket/models/rec", page_batch_size=8, rec_batch_size=16,
        det_limit_side_len=1280, max_pixels=50_000_000, max_pages=10, max_item_bytes=1 << 20, pdf_dpi=200, retries=5,
        backoff="30s", stall_timeout="15m", shard_deadline="6h", ttl="7d", suspend=True, pod_cleanup_policy="Keep")
    job = build_job(flags, name="scans")
    parsed = parse_spec(job["spec"])
    assert (parsed.input_uri, parsed.input_manifest, parsed.output_uri) == (
        "s3://bucket/scans", "s3://bucket/keys.txt", "s3://bucket/ocr")
    assert parsed.target_shard_bytes == 2 << 30 and parsed.shard_count is None
    assert parsed.s3.credentials is not None and parsed.s3.credentials.name == "creds"
    assert (parsed.s3.endpoint, parsed.s3.region, parsed.parallelism, parsed.device) == (
        "http://minio:9000", "eu-west-1", 4, "cpu")
    assert parsed.models is not None and parsed.models.rec_location == "s3://bucket/models/rec"
    assert parsed.ocr.pdf_dpi == 200 and parsed.ocr.max_item_bytes == 1 << 20
    assert (parsed.retries, parsed.backoff_seconds, parsed.stall_timeout_seconds, parsed.shard_deadline_seconds,
            parsed.ttl_seconds_after_finished) == (5, 30, 900, 21600, 7 * 86400)
    assert parsed.suspend and parsed.pod_cleanup_policy == "Keep" and parsed.queue_name == "q"
    assert parsed.resources == {"requests": {"cpu": 4}, "limits": {"memory": "24Gi"}}
    assert job["metadata"] == {"name": "scans"} and job["apiVersion"] == "ocrjob.dev/v1alpha1"


def test_missing_required_values_name_their_flags() -> None:
    message = usage_error(build_job, SubmitFlags(input="s3://bkt/in"))
    assert "--output" in message and "--image" in message and "--shards or --target-shard-size" in message
    assert "--input" not in message


def test_names_namespaces_labels() -> None:
    flags = SubmitFlags(**MINIMAL)  # type: ignore[arg-type]
    assert build_job(flags)["metadata"] == {"generateName": "ocrjob-"}
    job = build_job(flags, name="a", namespace="team", labels=["team=ocr"], annotations=["note=x=y"])
    assert job["metadata"] == {"name": "a", "namespace": "team", "labels": {"team": "ocr"},
                               "annotations": {"note": "x=y"}}
    assert build_job(flags, generate_name="nightly")["metadata"] == {"generateName": "nightly-"}
    assert "KEY=VALUE" in usage_error(build_job, flags, labels=["novalue"])


@pytest.mark.parametrize("prefix", ["ci", "ci-", "x" * 80, "y" * 44 + "-", "z" * 45])
def test_generated_names_stay_within_the_crd_limit(prefix: str) -> None:
    generated = generate_prefix(prefix)
    assert generated.endswith("-") and len(generated) + 5 <= 50
    assert generated.rstrip("-").startswith(prefix.rstrip("-")[:10])


SAMPLE = REPO / "manifests" / "ocrjob.yaml"


def test_the_sample_file_is_read_and_its_secret_reported() -> None:
    parsed = parse_job_file(SAMPLE.read_text(), str(SAMPLE))
    assert parsed.ignored == ["Secret scans-s3"] and parsed.job["metadata"]["name"] == "scans-2024"
    job = build_job(SubmitFlags(), parsed.job)
    assert job["spec"] == parsed.job["spec"] and job["metadata"] == {"name": "scans-2024"}
    parse_spec(job["spec"])


def test_flags_override_the_file() -> None:
    file_job = parse_job_file(SAMPLE.read_text(), "sample").job
    file_job["metadata"].update(resourceVersion="12", uid="u", namespace="from-file")
    job = build_job(SubmitFlags(shards=3, parallelism=1, requests=["cpu=2"]), file_job, name="other",
                    namespace="mine", sets=["ocr.pdfDpi=300", "spec.tolerations=[{operator: Exists}]"])
    assert job["metadata"] == {"name": "other", "namespace": "mine"}
    spec = job["spec"]
    assert spec["sharding"] == {"shardCount": 3}  # one-of: the file's targetShardSize is gone
    assert spec["parallelism"] == 1 and spec["resources"]["requests"] == {"cpu": 2, "memory": "16Gi"}
    assert spec["resources"]["limits"] == {"memory": "24Gi"}  # maps merge
    assert spec["ocr"]["pdfDpi"] == 300 and spec["ocr"]["pageBatchSize"] == 8
    assert spec["tolerations"] == [{"operator": "Exists"}]
    kept = build_job(SubmitFlags(target_shard_size="1Gi"), {**file_job, "spec": {**file_job["spec"],
                                                                                  "sharding": {"shardCount": 2}}})
    assert kept["spec"]["sharding"] == {"targetShardSize": "1Gi"} and kept["metadata"]["namespace"] == "from-file"


@pytest.mark.parametrize(("text", "message"), [
    ("kind: OcrJob\n  bad: [indent", "not valid YAML"),
    ("apiVersion: v1\nkind: ConfigMap\n", "holds 0 OcrJob objects"),
    ("kind: OcrJob\n---\nkind: OcrJob\n", "holds 2 OcrJob objects"),
    ("apiVersion: batch/v1\nkind: OcrJob\n", "is not ocrjob.dev/v1alpha1"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_bad_files_are_usage_errors(text: str, message: str) -> None:
    assert message in usage_error(parse_job_file, text, "job.yaml")


def test_set_values_are_yaml_and_paths_are_checked() -> None:
    assert apply_sets({"ocr": {"pdfDpi": 1}}, ["ocr.pdfDpi=200", "suspend=true", "image=a:b", "nodeSelector.x="]) == {
        "ocr": {"pdfDpi": 200}, "suspend": True, "image": "a:b", "nodeSelector": {"x": ""}}
    assert "PATH=VALUE" in usage_error(apply_sets, {}, ["ocr.pdfDpi"])
    assert "PATH=VALUE" in usage_error(apply_sets, {}, ["ocr..x=1"])
    assert "not valid YAML" in usage_error(apply_sets, {}, ["a=[1"])


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200),
                                               ("1h30m", 5400), ("1d", 86400), ("0.5s", 0.5), (" 5 ", 5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "-1", "1h-2m"])
def test_bad_durations(text: str) -> None:
    assert "90s, 15m, 2h" in usage_error(parse_duration, text)


def test_secret_requirements() -> None:
    assert secret_requirements({}) is None
    assert secret_requirements({"s3": {"credentialsSecret": {"name": "c"}}}) == (
        "c", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    assert secret_requirements({"s3": {"credentialsSecret": {"name": "c", "accessKeyIdKey": "id",
                                                             "sessionTokenKey": "tok"}}}) == (
        "c", ["id", "AWS_SECRET_ACCESS_KEY", "tok"])


ORIGINAL: dict[str, Any] = {
    "apiVersion": "ocrjob.dev/v1alpha1", "kind": "OcrJob",
    "metadata": {"name": "scans", "namespace": "team", "uid": "u-1", "resourceVersion": "9",
                 "labels": {"team": "ocr", "ocrjob.dev/retry-of": "older"},
                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
    "spec": {"input": {"uri": "s3://bkt/in"}, "output": {"uri": "s3://bkt/out"}, "image": "img:1",
             "sharding": {"shardCount": 4}, "suspend": True, "parallelism": 2},
    "status": {"phase": "Succeeded"},
}


def test_a_retry_job_copies_the_spec_over_the_manifest_and_links_the_original() -> None:
    uri = "s3://bkt/out/_ocrjob/u-1/retries/x.json"
    job = retry_job(ORIGINAL, uri, 2)
    assert job["spec"] == {**ORIGINAL["spec"], "input": {"uri": "s3://bkt/in", "manifest": uri}, "suspend": False}
    assert ORIGINAL["spec"]["input"] == {"uri": "s3://bkt/in"}  # the original is not modified
    assert job["metadata"] == {
        "namespace": "team", "generateName": "scans-retry-",
        "labels": {"team": "ocr", LABEL_RETRY_OF: "scans"},
        "annotations": {ANNOTATION_RETRY_OF: "team/scans", ANNOTATION_RETRY_OF_UID: "u-1", ANNOTATION_RETRY_ITEMS: "2"},
    }
    parse_spec(job["spec"])
    assert retry_job(ORIGINAL, uri, 2, name="again")["metadata"]["name"] == "again"
    again = retry_job({**ORIGINAL, "metadata": {**ORIGINAL["metadata"], "name": "scans-retry-ab1c2"}}, uri, 1)
    assert again["metadata"]["generateName"] == "scans-retry-"
    long = retry_job({**ORIGINAL, "metadata": {**ORIGINAL["metadata"], "name": "n" * 50}}, uri, 1)
    assert len(long["metadata"]["generateName"]) + 5 <= 50


def test_retry_manifest_lives_with_the_original_and_is_a_planner_manifest() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert retry_manifest_uri("s3://bkt/out/", "u-1", when, "abc123") == \
        "s3://bkt/out/_ocrjob/u-1/retries/20260102T030405Z-abc123.json"
    data = retry_manifest(["b/2.png", "a/1.png"], ORIGINAL)
    assert parse_input_manifest(data).keys == ("a/1.png", "b/2.png")
