"""Typed records: to_dict is the JSON stored, from_dict validates it (errors name the record and field), and the
one reader treats a missing, non-JSON or foreign object as absent while other storage errors propagate."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from inference_pod.job import layout, records
from inference_pod.job.errors import ObjectNotFound, ObjectTooLarge, PermissionDenied, StorageUnavailable
from inference_pod.job.plan import ShardingPolicy, load_plan, make_plan, manifest_key, read_plan
from inference_pod.job.plan_records import Item, Manifest, Plan, PlanShard
from inference_pod.job.records import RecordError, encode
from inference_pod.job.result_record import Line, Page, ResultContext, ResultError, ResultRecord, Source
from inference_pod.job.shard_records import ErrorEntry, Heartbeat, ItemCounts, ShardContext, ShardSummary, Throughput
from inference_pod.job.storage import LocalStorage
from inference_pod.job.summary_records import (
    IndexEntry,
    IndexPart,
    JobShard,
    JobSummary,
    ResultsIndex,
    UnreadableManifest,
    index_part,
)
from inference_pod.shard.messages import Exited, Fatal, ItemDone, Outcome, Ready, ShardProgress

CONTEXT = ShardContext(({"kind": "gpu", "paddle_device": "gpu:0"},), {"det": "d", "rec": "r"}, 2, "1", "job-s0-a1")
COUNTS = ItemCounts(10, 6, 2, 1, 1, 1, 9, 3)
PAGE = Page(1, 640, 480, "Invoice 42", (Line("Invoice", 0.99, ((0, 0), (9, 0), (9, 5), (0, 5))),
                                         Line("42", 0.5, ((20, 0), (29, 0), (29, 5), (20, 5)))))
NO_TEXT_PAGE = Page(2, 640, 480, "", (), no_text_found=True)
SOURCE = Source("s3://b/in/a.pdf", "a.pdf", "e1", 123)
OK = ResultRecord("ok", SOURCE, ResultContext("j", 3, {"det": "d"}, {"kind": "cpu"}, 0), "2026-01-01T00:00:00Z",
                  (PAGE, PAGE), "pdf", {"download_s": 0.01, "inference_s": 0.4})
ERROR = ResultRecord("error", SOURCE, ResultContext("j", 3), "2026-01-01T00:00:00Z",
                     error=ResultError("corrupt", "bad bytes"))
MANIFEST = Manifest("j", 3, "s3://b/in", "s3://b/out", (Item("a.pdf", 123, "e1"), Item("b.png", 7)))
PLAN_ID = "0123456789abcdef"
PLAN = Plan("j", PLAN_ID, "s3://b/in", "s3://b/out", "2026-01-01T00:00:00Z", 0.25, 2, 130,
            (PlanShard(0, 1, 123, layout.plan_manifest_key("j", PLAN_ID, 0)), PlanShard(1, 1, 7, "m1")),
            {"unsupported": {"count": 1, "examples": ["x.txt"]}})
HEARTBEAT = Heartbeat("j", 3, "running", COUNTS, 100.0, 160.5, "2026-01-01T00:01:00Z", "host-a", CONTEXT)
SUMMARY = ShardSummary("succeeded", 0, "processed 10 items", COUNTS,
                       (ErrorEntry("x.png", "corrupt", "m"), ErrorEntry("y.png", "empty", "", earlier=True)), "j", 3,
                       {"corrupt": 1, "empty": 1}, 0, "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", 60.0,
                       Throughput(0.13, 0.15), "host-a", CONTEXT)
JOB = JobSummary("j", "s3://b/in", "s3://b/out", "failed", "2026-01-01T00:02:00Z", COUNTS, {"unsupported": {}},
                 {"corrupt": 1}, (ErrorEntry("x.png", "corrupt", "m"),),
                 (JobShard(0, 10, "succeeded", CONTEXT.devices, 60.0, Throughput(0.1, 0.2), "1"),
                  JobShard(1, 2, "pending")),
                 {"kubernetes": {"name": "scans"}, "failed_shards": [{"index": 1}]})
INDEX = ResultsIndex("j", "s3://b/out", (IndexPart(0, layout.index_part_key("j", 0), 1),),
                     (UnreadableManifest(1, "m1", "not found"),))
TRUNCATED = JobSummary("j", "s3://b/in", "s3://b/out", "failed", "2026-01-01T00:02:00Z", COUNTS,
                       failed_items=(ErrorEntry("x.png", "corrupt", "m"),), failed_items_total=3)
RECORDS = [OK, ERROR, MANIFEST, PLAN, HEARTBEAT, SUMMARY, ShardSummary.early_failure(75, "no GPU"), JOB, TRUNCATED,
           INDEX, IndexEntry("a.pdf", "a.pdf.json", 0),
           MANIFEST.items[0], PLAN.shards[0], COUNTS, ERROR.error, SOURCE, PAGE, NO_TEXT_PAGE]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_round_trips_through_its_json(record: Any) -> None:
    stored = json.loads(encode(record.to_dict()))
    assert type(record).from_dict(stored) == record
    assert type(record).from_dict(stored).to_dict() == record.to_dict() == stored


def test_records_with_a_schema_name_it() -> None:
    assert [r.to_dict()["schema"] for r in (OK, MANIFEST, PLAN, HEARTBEAT, SUMMARY, JOB, INDEX)] == [
        records.RESULT_SCHEMA, records.MANIFEST_SCHEMA, records.PLAN_SCHEMA, records.PROGRESS_SCHEMA,
        records.SHARD_SUMMARY_SCHEMA, records.JOB_SUMMARY_SCHEMA, records.INDEX_SCHEMA]


def test_result_records_keep_the_documented_keys() -> None:
    common = {"schema", "status", "source", "page_count", "text", "pages", "job_id", "shard_index", "created", "error"}
    assert set(OK.to_dict()) == common | {"format", "models", "device", "worker", "timing"}
    assert OK.to_dict()["text"] == "Invoice 42\n\nInvoice 42" and OK.to_dict()["error"] is None
    assert OK.to_dict()["pages"][0]["lines"][0] == {"text": "Invoice", "score": 0.99,
                                                    "polygon": [[0, 0], [9, 0], [9, 5], [0, 5]]}
    # An error record written before the worker's predictor loaded has no models, device or worker.
    assert set(ERROR.to_dict()) == common and ERROR.to_dict()["error"] == {"code": "corrupt", "message": "bad bytes"}


def test_no_text_found_is_stored_only_when_true_and_older_pages_read_as_false() -> None:
    assert "no_text_found" not in PAGE.to_dict() and NO_TEXT_PAGE.to_dict()["no_text_found"] is True
    assert Page.from_dict({k: v for k, v in NO_TEXT_PAGE.to_dict().items() if k != "no_text_found"}).no_text_found \
        is False  # a result written before the field existed
    record = ResultRecord("ok", SOURCE, ResultContext("j", 3), "2026-01-01T00:00:00Z", (PAGE, NO_TEXT_PAGE), "pdf")
    assert ResultRecord.from_dict(json.loads(encode(record.to_dict()))).no_text_pages == 1
    assert OK.no_text_pages == 0 and ERROR.no_text_pages == 0
    assert ItemCounts.from_dict({"ok": 1}).no_text_pages == 0  # counts written before it read as 0


def test_shard_summary_keys_full_and_early() -> None:
    assert list(SUMMARY.to_dict()) == [
        "schema", "job_id", "shard_index", "status", "exit_code", "message", "items", "error_codes", "errors",
        "errors_truncated", "started", "finished", "seconds", "throughput", "host", "devices", "models", "workers",
        "attempt", "pod"]
    early = ShardSummary.early_failure(75, "no GPU")
    assert early.early and early.to_dict() == {"schema": records.SHARD_SUMMARY_SCHEMA, "status": "failed",
                                               "exit_code": 75, "message": "no GPU", "items": None, "errors": []}
    assert SUMMARY.to_dict()["errors"][1] == {"key": "y.png", "code": "empty", "message": "", "earlier": True}


def test_job_summary_keeps_what_the_writer_added() -> None:
    doc = JOB.to_dict()
    assert doc["kubernetes"] == {"name": "scans"} and doc["status"] == "failed"
    assert JobSummary.from_dict(doc).extra == {"kubernetes": {"name": "scans"}, "failed_shards": [{"index": 1}]}


def _error(record_type: Any, doc: Any) -> RecordError:
    with pytest.raises(RecordError) as err:
        record_type.from_dict(doc)
    assert isinstance(err.value, ValueError)
    return err.value


@pytest.mark.parametrize(
    ("record_type", "change", "field"),
    [
        (Plan, lambda d: d.pop("job_id"), "job_id"),
        (Plan, lambda d: d["shards"][1].update(index="1"), "shards[1].index"),
        (Plan, lambda d: d.update(shard_count=5), "shard_count"),
        (Manifest, lambda d: d["items"][0].update(size=True), "items[0].size"),
        (Manifest, lambda d: d.update(items={}), "items"),
        (Heartbeat, lambda d: d["items"].update(ok=1.5), "items.ok"),
        (Heartbeat, lambda d: d.update(devices=["gpu"]), "devices[0]"),
        (ShardSummary, lambda d: d.update(status="done"), "status"),
        (ShardSummary, lambda d: d["errors"][0].pop("key"), "errors[0].key"),
        (ShardSummary, lambda d: d["error_codes"].update(corrupt="1"), "error_codes.corrupt"),
        (JobSummary, lambda d: d["shards"][0]["throughput"].update(items_per_second="fast"),
         "shards[0].throughput.items_per_second"),
        (ResultRecord, lambda d: d.update(status="maybe"), "status"),
        (ResultRecord, lambda d: d["pages"][1]["lines"][0].update(polygon=[["x", 1]]), "pages[1].lines[0].polygon"),
        (ResultRecord, lambda d: d.update(error=None, status="error"), "error"),
        (ResultsIndex, lambda d: d["parts"][0].pop("shard"), "parts[0].shard"),
    ],
)
def test_from_dict_names_the_record_and_the_field(record_type: Any, change: Any, field: str) -> None:
    example = {Plan: PLAN, Manifest: MANIFEST, Heartbeat: HEARTBEAT, ShardSummary: SUMMARY, JobSummary: JOB,
               ResultRecord: OK, ResultsIndex: INDEX}[record_type]
    doc = json.loads(encode(example.to_dict()))
    change(doc)
    error = _error(record_type, doc)
    assert (error.record, error.field) == (record_type.NAME, field)
    assert f"{record_type.NAME} record: field {field!r}" in str(error)


def test_a_record_must_be_an_object() -> None:
    error = _error(Plan, ["not", "a", "plan"])
    assert (error.record, error.field) == ("plan", "") and "expected a JSON object, got list" in str(error)


class Failing:
    """A storage whose every read fails with one error."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        raise self.exc


def test_read_record_treats_missing_non_json_and_foreign_objects_as_absent(tmp_path) -> None:
    store = LocalStorage(tmp_path)
    store.put("half.json", b'{"schema": "ocrjob.plan/v1", "job')
    store.put("list.json", b"[1, 2]")
    store.put("other.json", json.dumps({"schema": "someone.else/v3"}).encode())
    store.put("bad-fields.json", encode({**PLAN.to_dict(), "job_id": 7}))
    store.put("plan.json", encode(PLAN.to_dict()))
    for key in ("missing.json", "half.json", "list.json", "other.json"):
        assert records.read_record(store, key, records.PLAN_SCHEMA) is None
        assert records.read(store, key, Plan) is None
    assert records.read(store, "bad-fields.json", Plan) is None  # the right schema, not a usable plan
    assert records.read_record(store, "bad-fields.json", records.PLAN_SCHEMA) == {**PLAN.to_dict(), "job_id": 7}
    assert records.read_record(store, "plan.json", records.PLAN_SCHEMA) == PLAN.to_dict()
    assert records.read(store, "plan.json", Plan) == PLAN
    # The strict forms say why.
    with pytest.raises(ObjectNotFound):
        records.load(store, "missing.json", Plan)
    with pytest.raises(RecordError, match="other.json is not a JSON object of schema ocrjob.plan/v1"):
        records.load(store, "other.json", Plan)
    with pytest.raises(RecordError, match="'job_id' must be a string, got int"):
        records.load(store, "bad-fields.json", Plan)


class Sized:
    """A storage that records the bound of each read and serves one object."""

    def __init__(self, data: bytes) -> None:
        self.data, self.bounds = data, list[int | None]()

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        self.bounds.append(max_bytes)
        if max_bytes is not None and len(self.data) > max_bytes:
            raise ObjectTooLarge(f"object has {len(self.data)} bytes or more, more than the {max_bytes} bytes")
        return self.data


def test_an_oversized_record_is_refused_unread_and_reads_as_absent() -> None:
    huge = encode({**HEARTBEAT.to_dict(), "padding": "x" * Heartbeat.MAX_BYTES})
    store = Sized(huge)
    assert records.read(store, "progress/00000.json", Heartbeat) is None
    with pytest.raises(RecordError, match="more than the 1048576 bytes"):
        records.load(store, "progress/00000.json", Heartbeat)
    # Each record is read under its own bound; records without one under MAX_RECORD_BYTES.
    store = Sized(encode(PLAN.to_dict()))
    records.read(store, "plan.json", Plan)
    records.read(store, "m.json", Manifest)
    records.read_record(store, "x.json")
    assert store.bounds == [records.MAX_RECORD_BYTES, Manifest.MAX_BYTES, records.MAX_RECORD_BYTES]
    assert Heartbeat.MAX_BYTES < records.MAX_RECORD_BYTES < Manifest.MAX_BYTES


@pytest.mark.parametrize("exc", [StorageUnavailable("down"), PermissionDenied("no")])
def test_the_reader_propagates_other_storage_errors(exc: Exception) -> None:
    for read in (lambda s: records.read_record(s, "k"), lambda s: records.read(s, "k", Plan),
                 lambda s: records.load_record(s, "k")):
        with pytest.raises(type(exc)):
            read(Failing(exc))


def test_a_damaged_plan_is_never_replaced_by_a_new_one(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"png")
    source, dest = LocalStorage(tmp_path / "in"), LocalStorage(tmp_path / "out")
    plan = make_plan("j", str(tmp_path / "in"), str(tmp_path / "out"), source, dest, ShardingPolicy())
    assert load_plan(dest, "j") == plan and read_plan(dest, "j") == Plan.from_dict(plan)
    manifest = records.load(dest, manifest_key(plan, 0), Manifest)
    assert [(item.key, item.size) for item in manifest.items] == [("a.png", 3)] and manifest.total_bytes == 3
    dest.put(layout.plan_key("j"), b"{")
    with pytest.raises(RecordError):
        make_plan("j", str(tmp_path / "in"), str(tmp_path / "out"), source, dest, ShardingPolicy())
    assert load_plan(LocalStorage(tmp_path / "elsewhere"), "j") is None


@pytest.mark.parametrize("value", [
    MANIFEST, ItemDone(1, "a.png", Outcome.SKIPPED, code="corrupt", message="m", previous_failed=True),
    Ready(0, {"kind": "cpu"}, {"det": "d"}), Fatal(0, 70, "boom"), Exited(1),
    ShardProgress(3, ItemDone(0, "b.png", Outcome.OK, pages=2)),
])
def test_what_crosses_a_process_boundary_pickles(value: Any) -> None:
    assert pickle.loads(pickle.dumps(value)) == value


def test_an_item_done_knows_whether_it_is_an_error() -> None:
    assert ItemDone(0, "a", Outcome.FAILED).is_error and not ItemDone(0, "a", Outcome.OK).is_error
    assert ItemDone(0, "a", Outcome.SKIPPED, previous_failed=True).is_error
    assert not ItemDone(0, "a", Outcome.SKIPPED).is_error


def test_a_job_summary_says_when_its_failed_items_are_cut() -> None:
    assert (TRUNCATED.to_dict()["failed_items_total"], TRUNCATED.to_dict()["failed_items_truncated"]) == (3, True)
    assert (JOB.failed_items_total, JOB.failed_items_truncated) == (1, False)
    old = {key: value for key, value in JOB.to_dict().items() if not key.startswith("failed_items_")}
    assert JobSummary.from_dict(old).failed_items_total == 1  # a v1 summary listed every failed item


def test_json_lines_round_trip_and_a_bad_line_is_named() -> None:
    entries = [ErrorEntry("a.png", "corrupt", "m"), ErrorEntry("b.png", "empty", "", earlier=True)]
    data = records.encode_lines(e.to_dict() for e in entries)
    assert data.count(b"\n") == 2 and list(records.decode_lines(data, ErrorEntry)) == entries
    with pytest.raises(RecordError, match="failed/00001.jsonl line 3"):
        list(records.decode_lines(data + b'{"key": 1}\n', ErrorEntry, "failed/00001.jsonl"))
    with pytest.raises(RecordError, match="line 1 is not valid JSON"):
        list(records.decode_lines(b"{not json\n", IndexEntry, "index/00000.jsonl"))


def test_an_index_part_is_the_json_lines_of_its_entries() -> None:
    keys = ["a.pdf", 'q"uote\\/x.png', "dé/ü.tif", "tab\tkey.jpg"]
    expected = records.encode_lines(IndexEntry(k, layout.result_key(k), 7).to_dict() for k in keys)
    assert index_part(keys, 7) == expected and index_part([], 7) == b""
    assert list(records.decode_lines(expected, IndexEntry)) == [IndexEntry(k, layout.result_key(k), 7) for k in keys]
