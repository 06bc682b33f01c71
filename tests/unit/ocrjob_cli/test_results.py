"""The S3 side of `ocrjob results` / `ocrjob retry`, over a local stand-in for the job's output prefix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inference_pod.job import layout, records
from inference_pod.job.storage import LocalStorage, S3Settings
from inference_pod.job.summary import write_job_summary
from inference_pod.job.summary_records import FAILED_ITEMS_IN_SUMMARY
from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_cli.render import results_view
from ocrjob_cli.results import (
    JobFiles,
    candidate_keys,
    classify,
    delete_error_records,
    download_results,
    require_summary,
    retry_plan,
    s3_settings,
    unfinished_shards,
)
from tests.support.memory_storage import MemoryStorage
from tests.support.summary_jobs import doc_key, failing_job

UID = "uid-1"


def job(phase: str = "Succeeded", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "scans", "namespace": "team", "uid": UID},
            "spec": {"input": {"uri": "s3://bkt/in"}, "output": {"uri": "s3://bkt/out"},
                     "s3": {"endpoint": "http://minio.storage.svc:9000", "region": "eu-1", "pathStyle": False}},
            "status": {"phase": phase, "planLocation": f"s3://bkt/out/{layout.plan_key(UID)}", **status}}


class Output:
    """A job's output prefix on disk: plan, shard manifests, results, summary, index."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = LocalStorage(root)

    def put(self, key: str, doc: Any) -> None:
        self.storage.put(key, json.dumps(doc).encode())

    def plan(self, shards: dict[int, list[str]]) -> None:
        plan_id = layout.random_id()  # the manifests are found through the plan's entries, wherever they are
        self.put(layout.plan_key(UID), {"job_id": UID, "plan_id": plan_id, "shard_count": len(shards), "shards": [
            {"index": i, "items": len(keys), "manifest": layout.plan_manifest_key(UID, plan_id, i)} for i, keys in
            shards.items()]})
        for i, keys in shards.items():
            self.put(layout.plan_manifest_key(UID, plan_id, i),
                     {"items": [{"key": k, "size": 1, "etag": "e"} for k in keys]})
        parts = []
        for i, keys in shards.items():
            parts.append({"shard": i, "key": layout.index_part_key(UID, i), "entries": len(keys)})
            self.storage.put(parts[-1]["key"], records.encode_lines(
                {"source": k, "result": layout.result_key(k), "shard": i} for k in keys))
        self.put(layout.job_index_key(UID), {"schema": records.INDEX_SCHEMA, "job_id": UID, "output": "s3://bkt/out",
                                             "parts": parts})

    def result(self, key: str, status: str) -> None:
        self.put(layout.result_key(key), {"status": status, "source": {"key": key}})

    def files(self, job_: dict[str, Any] | None = None) -> JobFiles:
        return JobFiles(job_ or job(), S3Settings(), opener=lambda uri, settings: self.storage)


@pytest.fixture
def out(tmp_path: Path) -> Output:
    return Output(tmp_path / "out")


def test_s3_settings_prefer_flags_then_the_environment_then_the_job() -> None:
    spec = job()["spec"]
    assert s3_settings(spec, env={}) == S3Settings("http://minio.storage.svc:9000", "eu-1", False)
    ambient = {"OCRJOB_S3_ENDPOINT": "http://localhost:9000", "AWS_REGION": "us-east-1", "OCRJOB_S3_PATH_STYLE": "1"}
    assert s3_settings(spec, env=ambient) == S3Settings("http://localhost:9000", "us-east-1", True)
    assert s3_settings(spec, "http://flag:1", "r-2", env=ambient) == S3Settings("http://flag:1", "r-2", True)


def test_candidates_are_failed_items_and_items_of_unfinished_shards() -> None:
    plan = {"shards": [{"index": 0}, {"index": 1}, {"index": 2}]}
    summary = {"failed_items": [{"key": "a.png"}, {"key": "b.png"}],
               "shards": [{"index": 0, "status": "succeeded"}, {"index": 1, "status": "failed"},
                          {"index": 2, "status": "pending"}]}
    assert unfinished_shards(summary, plan) == [1, 2]
    assert unfinished_shards({"status": "failed", "reason": "PodRejected"}, plan) == [0, 1, 2]
    assert unfinished_shards(None, plan) == [0, 1, 2]
    assert candidate_keys(summary["failed_items"], ["c.png", "a.png"]) == ["a.png", "b.png", "c.png"]


def test_classify_keeps_good_results() -> None:
    records = {"ok.png": {"status": "ok"}, "bad.png": {"status": "error"}}
    plan = classify(["bad.png", "missing.png", "ok.png"], records.get, threads=2)
    assert (plan.keys, plan.error_records, plan.ok) == (["bad.png", "missing.png"], ["bad.png"], 1)


def test_retry_plan_of_a_failed_job(out: Output) -> None:
    out.plan({0: ["a.png", "b.png"], 1: ["c.png", "d.png", "e.png"]})
    for key, status in (("a.png", "ok"), ("b.png", "error"), ("c.png", "ok"), ("d.png", "error")):
        out.result(key, status)  # e.png never got a result: its shard failed first
    out.put(layout.job_summary_key(UID), {"failed_items": [{"key": "b.png", "code": "decode_error", "message": "m"}],
                                          "shards": [{"index": 0, "status": "succeeded"},
                                                     {"index": 1, "status": "failed"}]})
    plan = retry_plan(out.files(), job("Failed"))
    assert (plan.keys, plan.error_records, plan.ok) == (["b.png", "d.png", "e.png"], ["b.png", "d.png"], 1)
    delete_error_records(out.files(), plan.error_records)
    assert not out.storage.exists(layout.result_key("b.png")) and out.storage.exists(layout.result_key("a.png"))


def test_retry_needs_a_finished_planned_job(out: Output) -> None:
    with pytest.raises(CliError) as err:
        retry_plan(out.files(), job("Running"))
    assert err.value.code is ExitCode.REJECTED and "is Running" in err.value.message
    with pytest.raises(CliError) as err:
        retry_plan(out.files(), job("Failed", message="planning failed: no documents"))
    assert err.value.code is ExitCode.NOT_FOUND and "no documents" in err.value.message


def test_summary_messages_say_why_there_is_none(out: Output) -> None:
    with pytest.raises(CliError) as err:
        require_summary(out.files(), job("Running", progress="3/10"))
    assert err.value.code is ExitCode.NOT_FOUND and "phase Running, 3/10 items" in err.value.message
    unplanned = job("Failed", message="CredentialsRefused: ...")
    del unplanned["status"]["planLocation"]
    with pytest.raises(CliError) as err:
        require_summary(out.files(unplanned), unplanned)
    assert "failed before it was planned" in err.value.message
    out.put(layout.job_summary_key(UID), {"status": "succeeded"})
    assert require_summary(out.files(), job()) == {"status": "succeeded"}


def test_download_everything_or_only_error_records(out: Output, tmp_path: Path) -> None:
    out.plan({0: ["x/a.png", "b.png"]})
    out.result("x/a.png", "ok")
    out.result("b.png", "error")
    summary = {"failed_items": [{"key": "b.png"}]}
    assert download_results(out.files(), summary, tmp_path / "all") == 2
    assert json.loads((tmp_path / "all" / "x" / "a.png.json").read_text())["status"] == "ok"
    assert json.loads((tmp_path / "all" / layout.job_summary_key(UID)).read_text()) == summary
    assert download_results(out.files(), summary, tmp_path / "failed", failed_only=True) == 1
    assert sorted(p.name for p in (tmp_path / "failed").glob("*.json")) == ["b.png.json"]


def test_download_reports_missing_results_and_refuses_escaping_keys(out: Output, tmp_path: Path) -> None:
    out.plan({0: ["a.png", "b.png"]})
    out.result("a.png", "ok")
    with pytest.raises(CliError) as err:
        download_results(out.files(), {}, tmp_path / "d")
    assert err.value.code is ExitCode.NOT_FOUND and "1 do not exist" in err.value.message
    assert (tmp_path / "d" / "a.png.json").exists()
    out.put(layout.job_index_key(UID), {"results": [{"result": "../../escape.json"}]})
    with pytest.raises(CliError, match="outside"):
        download_results(out.files(), {}, tmp_path / "e")


def test_writes_stay_under_the_job_output(out: Output) -> None:
    files = out.files()
    files.put("s3://bkt/out/_ocrjob/uid-1/retries/r.json", b"{}")
    assert out.storage.exists("_ocrjob/uid-1/retries/r.json")
    with pytest.raises(CliError, match="refusing"):
        files.put("s3://bkt/elsewhere/r.json", b"{}")


def test_download_reads_an_index_of_schema_v1(out: Output, tmp_path: Path) -> None:
    out.plan({0: ["a.png"]})
    out.result("a.png", "ok")
    out.put(layout.job_index_key(UID), {"schema": records.INDEX_V1_SCHEMA, "results": [
        {"source": "a.png", "result": layout.result_key("a.png"), "shard": 0}]})
    assert download_results(out.files(), {}, tmp_path / "v1") == 1
    out.put(layout.job_index_key(UID), {"schema": "ocrjob.index/v9", "parts": []})
    with pytest.raises(CliError, match="written by another OcrJob version") as err:
        download_results(out.files(), {}, tmp_path / "v9")
    assert err.value.code is ExitCode.STORAGE


def test_results_and_retry_see_every_failed_document_beyond_the_summary_cap(tmp_path: Path) -> None:
    store = MemoryStorage("s3://bkt/out")
    failed = set(range(0, FAILED_ITEMS_IN_SUMMARY * 2 + 10, 2))  # more than the summary holds, over every shard
    failing_job(store, UID, FAILED_ITEMS_IN_SUMMARY * 2 + 40, failed, shards=7)
    write_job_summary(store, UID)
    files = JobFiles(job(), S3Settings(), opener=lambda uri, settings: store)
    summary = files.summary()
    assert summary is not None and summary["schema"] == records.JOB_SUMMARY_SCHEMA
    assert (len(summary["failed_items"]), summary["failed_items_total"]) == (FAILED_ITEMS_IN_SUMMARY, len(failed))
    every = sorted(doc_key(i) for i in failed)
    # results -o json: every failed document; the table: the count of all, the first by key.
    complete = files.with_failed_items(summary)
    assert [item["key"] for item in complete["failed_items"]] == every and not complete["failed_items_truncated"]
    assert files.with_failed_items(summary, 5)["failed_items"] == summary["failed_items"][:5]
    beyond = files.with_failed_items(summary, FAILED_ITEMS_IN_SUMMARY + 3)
    assert len(beyond["failed_items"]) == FAILED_ITEMS_IN_SUMMARY + 3 and beyond["failed_items_truncated"]
    shown = _text(results_view("scans", files.with_failed_items(summary, 20), 20))
    assert f"Failed items ({len(failed)})" in shown and f"and {len(failed) - 20} more" in shown
    # retry: every error record, none of the good results.
    plan = retry_plan(files, job("Succeeded"))
    assert plan.keys == every and plan.error_records == every and plan.ok == 0
    assert download_results(files, summary, tmp_path / "failed", failed_only=True) == len(failed)


def test_a_missing_failed_list_is_an_error_not_fewer_failures(tmp_path: Path) -> None:
    store = MemoryStorage("s3://bkt/out")
    failing_job(store, UID, FAILED_ITEMS_IN_SUMMARY + 20, set(range(FAILED_ITEMS_IN_SUMMARY + 10)), shards=2)
    write_job_summary(store, UID)
    store.delete(layout.failed_items_key(UID, 1))
    files = JobFiles(job(), S3Settings(), opener=lambda uri, settings: store)
    with pytest.raises(CliError, match="failed/00001.jsonl does not exist, but the job summary counts") as err:
        retry_plan(files, job("Succeeded"))
    assert err.value.code is ExitCode.STORAGE


def _text(renderable: Any) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()
