"""The job summary's counts come from storage (result objects), not from the shard summaries alone: a lost shard
summary, a retry or a failed attempt cannot make them disagree with what is stored."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from inference_pod.job import layout, records, stored_counts
from inference_pod.job.plan import read_plan
from inference_pod.job.plan_records import Item, Manifest, Plan, PlanShard
from inference_pod.job.result_record import Page, ResultContext
from inference_pod.job.shard_records import ErrorEntry, ShardSummary
from inference_pod.job.storage import LocalStorage, ObjectInfo
from inference_pod.job.stored_counts import PresentResults, StoredShard, count_shard, count_stored, covers
from inference_pod.job.summary import NO_SUMMARY, build_job_summary, read_shard_summaries, write_job_summary
from inference_pod.job.summary_merge import JobMerge, ShardTally
from inference_pod.job.summary_records import FAILED_ITEMS_IN_SUMMARY, IndexEntry, JobShard
from inference_pod.shard import results
from tests.support.memory_storage import MemoryStorage
from tests.support.summary_jobs import doc_key, failing_job

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
    assert (job["failed_items_total"], job["failed_items_truncated"]) == (1, False)
    stored = count_stored(dest, keys, {0: None, 1: None})
    assert stored[0].read == 2 and stored[1].read == 1
    # The index: one JSONL part per shard, listed by index.json; the failed list only for the shard with failures.
    index = records.load_record(dest, layout.job_index_key("j"), records.INDEX_SCHEMA)
    assert [(part["shard"], part["key"], part["entries"]) for part in index["parts"]] == [
        (0, layout.index_part_key("j", 0), 2), (1, layout.index_part_key("j", 1), 2)]
    lines = list(records.decode_lines(dest.get(layout.index_part_key("j", 1)), IndexEntry))
    assert lines == [IndexEntry("c.png", "c.png.json", 1), IndexEntry("d.png", "d.png.json", 1)]
    assert list(records.decode_lines(dest.get(layout.failed_items_key("j", 0)), ErrorEntry)) == [
        ErrorEntry("b.png", "corrupt", "bad")]
    assert not dest.exists(layout.failed_items_key("j", 1))


def test_present_results_hold_the_result_keys_of_a_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stored_counts, "HASH_SORT_RUN", 7)  # several sorted runs, merged
    keys = [f"d/{i:03d}.png.json" for i in range(50)] + ["d/notes.txt", f"{layout.JOB_DIR}/j/summary.json"]
    present = PresentResults.of(ObjectInfo(key, 1, "e") for key in reversed(keys))
    assert len(present) == 50 and all(f"d/{i:03d}.png.json" in present for i in range(50))
    assert "d/050.png.json" not in present and "d/notes.txt" not in present
    assert f"{layout.JOB_DIR}/j/summary.json" not in present  # the job's own bookkeeping is not a result
    assert len(PresentResults.of([])) == 0 and "a.json" not in PresentResults.of([])


def _tally(index: int, keys: list[str]) -> ShardTally:
    from collections import Counter

    errors = tuple(ErrorEntry(key, "corrupt", "m") for key in sorted(keys))
    return ShardTally(JobShard(index, len(keys), "succeeded", failed=len(keys)), Counter(failed=len(keys)),
                      Counter(corrupt=len(keys)), errors[:3])


def test_the_merge_keeps_the_first_failed_items_by_key_and_never_more_than_a_few_times_the_cap() -> None:
    plan = Plan("j", "0123456789abcdef", "in", "out", "2026-01-01T00:00:00Z", 0.1, 60, 0,
                tuple(PlanShard(i, 6, 0, f"m{i}") for i in range(10)))
    merge = JobMerge(plan, keep=3)
    for index in reversed(range(10)):  # shards round-robin over the keys, merged in any order
        merge.add(_tally(index, [f"k{n:02d}" for n in range(index, 60, 10)]))
        assert len(merge._failed) <= 2 * 3 + 3
    job = merge.summary()
    assert [e.key for e in job.failed_items] == ["k00", "k01", "k02"]
    assert (job.failed_items_total, job.failed_items_truncated, job.items.failed) == (60, True, 60)
    assert [row.index for row in job.shards] == list(range(10)) and job.error_codes == {"corrupt": 60}


class HeldCounting:
    """A storage that counts the planned documents the summary writer holds: a shard's keys from the GET of its
    manifest to the PUT of its index part (the last thing done with them)."""

    def __init__(self, inner: MemoryStorage, plan: Plan) -> None:
        self.inner, self.uri = inner, inner.uri
        self._manifests = {entry.manifest: entry.items for entry in plan.shards}
        self._parts = {layout.index_part_key(plan.job_id, entry.index): entry.items for entry in plan.shards}
        self.held = self.peak = 0
        self._lock = threading.Lock()

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        data = self.inner.get(key, max_bytes)
        with self._lock:
            self.held += self._manifests.get(key, 0)
            self.peak = max(self.peak, self.held)
        return data

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.inner.put(key, data, content_type)
        with self._lock:
            self.held -= self._parts.get(key, 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_summary_holds_one_shard_of_keys_per_worker_and_counts_what_is_stored() -> None:
    inner = MemoryStorage()
    failed = set(range(0, 3000, 3)) | {2999}  # one more than the summary holds
    plan = failing_job(inner, "j", 3000, failed, shards=30)
    largest = max(entry.items for entry in plan.shards)
    one = HeldCounting(inner, plan)
    job = write_job_summary(one, "j", workers=1)
    assert one.peak == largest and one.held == 0
    four = HeldCounting(inner, plan)
    assert write_job_summary(four, "j", workers=4)["items"] == job["items"]
    assert four.peak <= 4 * largest < plan.item_count // 5
    # The counts are storage's: the same as counting every shard at once.
    manifests = {e.index: tuple(i.key for i in records.load(inner, e.manifest, Manifest).items) for e in plan.shards}
    summaries = read_shard_summaries(inner, "j", plan.shard_count)
    at_once = build_job_summary(plan, summaries, count_stored(inner, manifests, summaries)).to_dict()
    assert {**job, "created": ""} == {**at_once, "created": ""}
    assert job["items"]["failed"] == job["failed_items_total"] == len(failed) and job["failed_items_truncated"]
    assert [e["key"] for e in job["failed_items"]] == sorted(map(doc_key, failed))[:FAILED_ITEMS_IN_SUMMARY]
    assert read_plan(inner, "j") == plan
