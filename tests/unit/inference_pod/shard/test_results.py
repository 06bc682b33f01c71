from __future__ import annotations

import json

from inference_pod.job.plan_records import Item
from inference_pod.job.records import encode
from inference_pod.job.result_record import ResultContext
from inference_pod.job.shard_records import ShardContext
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
        "total": 3, "ok": 0, "failed": 1, "skipped": 2, "failed_earlier": 1, "pending": 0, "pages": 0,
        "no_text_pages": 0,
    }
    assert [error.to_dict() for error in tally.errors] == [
        {"key": "b.png", "code": "corrupt", "message": "bad", "earlier": True},
        {"key": "c.png", "code": "empty", "message": "0 bytes"},
    ]


def test_a_page_without_lines_is_flagged_unless_it_is_blank() -> None:
    found = {"width": 100, "height": 50, "lines": [box("Invoice", 5, 5)]}
    empty = {"width": 100, "height": 50, "lines": []}

    def unmeasured() -> bool:
        raise AssertionError("a page with text needs no blank measure")

    assert results.page_record(1, found, unmeasured).no_text_found is False
    assert results.page_record(1, empty, lambda: False).no_text_found is True  # not blank: text was missed
    assert results.page_record(1, empty, lambda: True).no_text_found is False  # blank paper: nothing to read


def test_no_text_pages_are_counted_for_written_and_skipped_results() -> None:
    tally = results.ShardTally(total=3)
    tally.add(ItemDone(0, "a.pdf", Outcome.OK, pages=3, no_text_pages=2))
    tally.add(ItemDone(0, "b.pdf", Outcome.SKIPPED, no_text_pages=1))  # an earlier attempt's result: in storage
    tally.add(ItemDone(0, "c.png", Outcome.FAILED, code="empty", message="0 bytes"))
    counts = tally.counts()
    assert (counts.pages, counts.no_text_pages) == (3, 3)
    summary = results.shard_summary("job", 0, "succeeded", 0, "done", tally, 0.0, 1.0, ShardContext())
    assert json.loads(results.termination_message(summary))["items"]["no_text_pages"] == 3
