from __future__ import annotations

import json

from inference_pod.job.plan_records import Item, Plan, PlanShard
from inference_pod.job.records import encode
from inference_pod.job.result_record import ResultContext
from inference_pod.job.shard_records import ShardContext, ShardSummary
from inference_pod.job.summary import build_job_summary
from inference_pod.shard import results
from inference_pod.shard.messages import ItemDone, Outcome


def test_termination_message_fits_4kib_and_keeps_counts() -> None:
    tally = results.ShardTally(total=5000)
    for i in range(3000):
        key = f"dir/very-long-name-{i:05d}.png"
        tally.add(ItemDone(0, key, Outcome.FAILED, code="corrupt", message="x" * 300))
    for i in range(2000):
        tally.add(ItemDone(0, f"ok-{i}.png", Outcome.OK, pages=2))
    context = ShardContext(devices=({"kind": "cpu"},))
    summary = results.shard_summary("job", 3, "succeeded", 0, "done", tally, 0.0, 10.0, context)
    assert len(summary.to_dict()["errors"]) == 3000  # the stored summary keeps every error for `ocrjob retry`
    message = results.termination_message(summary)
    assert len(message) <= results.TERMINATION_LOG_LIMIT
    decoded = json.loads(message)
    assert decoded["items"]["failed"] == 3000 and decoded["items"]["ok"] == 2000
    assert decoded["device"] == {"kind": "cpu"} and decoded["errors"]


def test_records_are_json_with_source_and_error() -> None:
    item = Item("a/b.png", 12, "etag1")
    record = results.error_record(item, "s3://bucket/in/", "corrupt", "bad bytes", ResultContext("j", 0)).to_dict()
    assert record["source"] == {"uri": "s3://bucket/in/a/b.png", "key": "a/b.png", "etag": "etag1", "size": 12}
    assert record["error"] == {"code": "corrupt", "message": "bad bytes"} and record["status"] == "error"
    json.loads(encode(record))


def test_job_summary_merges_shards_and_counts_missing_as_pending() -> None:
    shards = (PlanShard(0, 3, 0, "m0"), PlanShard(1, 2, 0, "m1"))
    plan = Plan("j", "0123456789abcdef", "in", "out", "2026-01-01T00:00:00Z", 0.1, 5, 0, shards)
    shard0 = ShardSummary.from_dict({
        "status": "succeeded", "items": {"ok": 2, "failed": 1, "skipped": 0, "pages": 4},
        "error_codes": {"corrupt": 1}, "errors": [{"key": "x.png", "code": "corrupt", "message": "m"}],
        "devices": [{"kind": "cpu"}], "seconds": 3.0,
    })
    summary = build_job_summary(plan, {0: shard0, 1: None}).to_dict()
    assert summary["status"] == "incomplete"
    assert summary["items"] == {
        "total": 5, "ok": 2, "failed": 1, "skipped": 0, "failed_earlier": 0, "pending": 2, "pages": 4
    }
    assert summary["failed_items"] == [{"key": "x.png", "code": "corrupt", "message": "m"}]
    assert [s["status"] for s in summary["shards"]] == ["succeeded", "pending"]


def box(text: str, x: int, y: int, w: int = 60, h: int = 20) -> dict:
    return {"text": text, "score": 0.9, "polygon": [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]}


def test_boxes_on_one_visual_line_become_one_text_row() -> None:
    lines = [box("Amount", 200, 102), box("Total", 50, 100), box("Invoice", 50, 40), box("4821", 300, 98)]
    assert results.reading_order_text(lines) == "Invoice\nTotal Amount 4821"
    assert results.reading_order_text([]) == ""


def test_errors_written_by_an_earlier_attempt_stay_in_the_summary() -> None:
    tally = results.ShardTally(total=3)
    tally.add(ItemDone(0, "a.png", Outcome.SKIPPED))
    tally.add(ItemDone(0, "b.png", Outcome.SKIPPED, code="corrupt", message="bad", previous_failed=True))
    tally.add(ItemDone(0, "c.png", Outcome.FAILED, code="empty", message="0 bytes"))
    assert tally.counts().to_dict() == {
        "total": 3, "ok": 0, "failed": 1, "skipped": 2, "failed_earlier": 1, "pending": 0, "pages": 0
    }
    assert [error.to_dict() for error in tally.errors] == [
        {"key": "b.png", "code": "corrupt", "message": "bad", "earlier": True},
        {"key": "c.png", "code": "empty", "message": "0 bytes"},
    ]
