"""The job summary's counts come from storage (result objects), not from the shard summaries alone: a lost shard
summary, a retry or a failed attempt cannot make them disagree with what is stored."""

from __future__ import annotations

from pathlib import Path

from inference_pod.job import layout, records
from inference_pod.job.plan_records import Item, Manifest, Plan, PlanShard
from inference_pod.job.result_record import Page, ResultContext
from inference_pod.job.shard_records import ShardSummary
from inference_pod.job.storage import LocalStorage
from inference_pod.job.stored_counts import StoredShard, count_shard, count_stored, covers
from inference_pod.job.summary import NO_SUMMARY, build_job_summary, write_job_summary
from inference_pod.shard import results

PLAN_ID = "0123456789abcdef"


def plan_of(*sizes: int) -> Plan:
    shards = tuple(PlanShard(i, n, 0, layout.plan_manifest_key("j", PLAN_ID, i)) for i, n in enumerate(sizes))
    return Plan("j", PLAN_ID, "in", "out", "2026-01-01T00:00:00Z", 0.1, sum(sizes), 0, shards)


def summary(status: str = "succeeded", errors: tuple[dict, ...] = (), **items: int) -> ShardSummary:
    codes: dict[str, int] = {}
    for error in errors:
        codes[error["code"]] = codes.get(error["code"], 0) + 1
    return ShardSummary.from_dict({"status": status, "items": items, "error_codes": codes, "errors": list(errors)})


def never(key: str):
    raise AssertionError(f"{key} must not be read: the shard summary covers it")


def test_a_succeeded_summary_covers_its_shard_without_a_single_read() -> None:
    done = summary(errors=({"key": "b", "code": "corrupt", "message": "m"},), ok=2, failed=1)
    assert covers(done)
    counted = count_shard(0, ["a", "b", "c"], {"a.json", "b.json", "c.json"}, done, never)
    assert (counted.ok, counted.failed, counted.pending, counted.read) == (2, 1, 0, 0)
    # A summary that lost errors (truncated) or did not finish cannot vouch for the rest.
    assert not covers(ShardSummary.from_dict({"status": "succeeded", "items": {}, "error_codes": {"x": 2},
                                              "errors": [{"key": "b", "code": "x"}]}))
    assert not covers(summary("failed")) and not covers(None)


def test_results_no_summary_covers_are_read_and_missing_ones_are_pending() -> None:
    item = Item("b", 1)
    bad = results.error_record(item, "in", "corrupt", "bad bytes", ResultContext("j", 0))
    good = results.ok_record(Item("a", 1), "in", [], ResultContext("j", 0), {}, "png")
    stored = {"a.json": good, "b.json": bad, "x.json": None}  # x: an object that is not a result record
    read: list[str] = []

    def reader(key: str):
        read.append(key)
        return stored[key]

    counted = count_shard(0, ["a", "b", "c", "x"], set(stored), None, reader)
    assert (counted.ok, counted.failed, counted.pending, counted.read) == (1, 1, 2, 3)
    assert [e.to_dict() for e in counted.errors] == [{"key": "b", "code": "corrupt", "message": "bad bytes"}]
    assert sorted(read) == ["a.json", "b.json", "x.json"]
    # A failed attempt's summary names its errors: those are not read again.
    failed = summary("failed", ({"key": "b", "code": "corrupt", "message": "bad bytes", "earlier": True},))
    read.clear()
    again = count_shard(0, ["a", "b", "c", "x"], set(stored), failed, reader)
    assert (again.ok, again.failed, again.pending) == (1, 1, 2) and sorted(read) == ["a.json", "x.json"]


def test_a_shard_without_a_summary_whose_results_all_exist_is_not_pending() -> None:
    plan = plan_of(2, 3)
    stored = {0: StoredShard(0, 2, 1, 1, (results.ErrorEntry("b", "corrupt", "m"),)), 1: StoredShard(1, 3, 3, 0)}
    job = build_job_summary(plan, {0: None, 1: summary(ok=3)}, stored).to_dict()
    assert [s["status"] for s in job["shards"]] == [NO_SUMMARY, "succeeded"]
    assert job["items"] == {"total": 5, "ok": 4, "failed": 1, "skipped": 0, "failed_earlier": 0, "pending": 0,
                            "pages": 0, "no_text_pages": 0}
    assert job["status"] == "succeeded" and job["error_codes"] == {"corrupt": 1}
    assert [e["key"] for e in job["failed_items"]] == ["b"]
    partial = build_job_summary(plan, {0: None, 1: None}, {0: StoredShard(0, 2, 1, 0)}).to_dict()
    assert [s["status"] for s in partial["shards"]] == ["pending", "pending"]
    assert partial["items"]["pending"] == 4 and partial["status"] == "incomplete"


def test_after_a_retry_earlier_errors_count_as_failed_and_counts_stay_disjoint() -> None:
    # The retry found 3 results (1 an error record) and processed 1 more: storage holds 3 ok + 1 error.
    retried = summary(errors=({"key": "b", "code": "corrupt", "message": "m", "earlier": True},),
                      ok=1, failed=0, skipped=3, failed_earlier=1, pages=1)
    stored = {0: StoredShard(0, 4, 3, 1, retried.errors)}
    job = build_job_summary(plan_of(4), {0: retried}, stored).to_dict()
    assert job["items"] == {"total": 4, "ok": 1, "failed": 1, "skipped": 2, "failed_earlier": 1, "pending": 0,
                            "pages": 1, "no_text_pages": 0}
    assert (job["shards"][0]["ok"], job["shards"][0]["failed"]) == (3, 1)


def test_no_text_pages_come_from_storage() -> None:
    flagged = Page(1, 10, 10, "", (), no_text_found=True)
    plain = Page(2, 10, 10, "x", ())
    stored = {f"{key}.json": results.ok_record(Item(key, 1), "in", pages, ResultContext("j", 0), {}, "pdf")
              for key, pages in (("a", [flagged, plain]), ("b", [flagged, flagged]))}
    # No covering summary: each result is read and its flagged pages counted.
    read = count_shard(0, ["a", "b"], set(stored), None, stored.__getitem__)
    assert read.no_text_pages == 3
    # A succeeded summary covers its shard: its count (written and skipped results) is storage's, nothing is read.
    covered = count_shard(0, ["a", "b"], set(stored), summary(ok=2, no_text_pages=3), never)
    assert covered.no_text_pages == 3
    job = build_job_summary(plan_of(2, 1), {0: summary(ok=2, no_text_pages=3), 1: None},
                            {0: covered, 1: StoredShard(1, 1, 1, 0, no_text_pages=1)})
    assert job.items.no_text_pages == 4


def write(dest: LocalStorage, key: str, record) -> None:
    dest.put(key, records.encode(record.to_dict()))


def test_write_job_summary_counts_the_objects_in_storage(tmp_path: Path) -> None:
    dest = LocalStorage(tmp_path / "out")
    plan = plan_of(2, 2)
    dest.put(layout.plan_key("j"), records.encode(plan.to_dict()))
    keys = {0: ("a.png", "b.png"), 1: ("c.png", "d.png")}
    for index, names in keys.items():
        manifest = Manifest("j", index, "in", str(tmp_path / "out"), tuple(Item(k, 1) for k in names))
        dest.put(plan.shards[index].manifest, records.encode(manifest.to_dict()))
    context = ResultContext("j", 0)
    write(dest, "a.png.json", results.ok_record(Item("a.png", 1), "in", [], context, {}, "png"))
    write(dest, "b.png.json", results.error_record(Item("b.png", 1), "in", "corrupt", "bad", context))
    write(dest, "c.png.json", results.ok_record(Item("c.png", 1), "in", [], context, {}, "png"))
    # Shard 0 lost its summary; shard 1's summary says all done, but d.png's result is not in storage.
    dest.put(layout.shard_summary_key("j", 1), records.encode(summary(ok=2).to_dict()))
    job = write_job_summary(dest, "j")
    assert job["items"]["ok"] == 2 and job["items"]["failed"] == 1 and job["items"]["pending"] == 1
    assert [(s["status"], s["ok"], s["failed"], s["pending"]) for s in job["shards"]] == [
        (NO_SUMMARY, 1, 1, 0), ("succeeded", 1, 0, 1)]
    assert [e["key"] for e in job["failed_items"]] == ["b.png"]
    stored = count_stored(dest, keys, {0: None, 1: None})
    assert stored[0].read == 2 and stored[1].read == 1
