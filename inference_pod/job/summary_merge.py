"""Merging shards into the job summary, one shard at a time: each shard leaves a `ShardTally` (its counts, its row
and at most FAILED_ITEMS_IN_SUMMARY of its errors, never its keys) and `JobMerge` adds them up. Pure: no storage.

Job counts, disjoint: `failed` is every error record; `ok` + `skipped` every ok result, `skipped` those an earlier
attempt wrote (as the last summary of each shard says); `failed_earlier` how many of `failed` an earlier attempt
wrote; `pending` the documents without a result; `no_text_pages` the ok results' pages flagged `no_text_found`
(stored counts too). The counts come from storage (`stored_counts`); devices, seconds, throughput, pages and how
many results an earlier attempt wrote from the shard summaries. A shard with every document's result is not
pending, summary or not.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Any

from inference_pod.job import records
from inference_pod.job.plan_records import Plan, PlanShard
from inference_pod.job.shard_records import ErrorEntry, ItemCounts, ShardSummary
from inference_pod.job.stored_counts import StoredShard
from inference_pod.job.summary_records import FAILED_ITEMS_IN_SUMMARY, JobShard, JobSummary

NO_SUMMARY = "no_summary"  # a shard without a summary whose documents all have results (not pending)


def _by_key(entry: ErrorEntry) -> str:
    return entry.key


@dataclass(frozen=True)
class ShardTally:
    """One shard's part of the job summary: its row, its share of each job count and error code, and its first
    `keep` errors by key (the only ones that can be among the job's first `keep`)."""

    row: JobShard
    counts: Counter
    codes: Counter
    first_errors: tuple[ErrorEntry, ...]


def tally_shard(entry: PlanShard, summary: ShardSummary | None, found: StoredShard | None,
                keep: int = FAILED_ITEMS_IN_SUMMARY) -> ShardTally:
    """Pure: `found` is what storage holds of the shard's documents (None: nothing known, e.g. its manifest could
    not be read, so every document is pending)."""
    found = found or StoredShard(entry.index, entry.items, 0, 0)
    counts = (summary.items if summary else None) or ItemCounts()
    skipped_ok = min(max(0, counts.skipped - counts.failed_earlier), found.ok)
    totals = Counter(ok=found.ok - skipped_ok, skipped=skipped_ok, failed=found.failed, pages=counts.pages,
                     failed_earlier=sum(1 for e in found.errors if e.earlier), no_text_pages=found.no_text_pages)
    pending = max(0, entry.items - found.present)
    if summary is None:
        row = JobShard(entry.index, entry.items, "pending" if pending else NO_SUMMARY, ok=found.ok,
                       failed=found.failed, pending=pending)
    else:
        row = JobShard(entry.index, entry.items, summary.status, summary.context.devices, summary.seconds,
                       summary.throughput, summary.context.attempt, found.ok, found.failed, pending)
    return ShardTally(row, totals, Counter(e.code for e in found.errors),
                      tuple(heapq.nsmallest(keep, found.errors, key=_by_key)))


class JobMerge:
    """The job summary of `plan`, built up one `ShardTally` at a time. Holds the shard rows (one per shard), the
    counts and at most 2 x `keep` failed items plus one shard's: never a key per document."""

    def __init__(self, plan: Plan, keep: int = FAILED_ITEMS_IN_SUMMARY) -> None:
        self.plan, self.keep = plan, keep
        self.totals: Counter = Counter()
        self.codes: Counter = Counter()
        self.rows: list[JobShard] = []
        self._failed: list[ErrorEntry] = []
        self._above: str | None = None  # once `keep` are held, no key from here up can be among the first `keep`

    def add(self, tally: ShardTally) -> None:
        self.rows.append(tally.row)
        self.totals.update(tally.counts)
        self.codes.update(tally.codes)
        for entry in tally.first_errors:  # in key order
            if self._above is not None and entry.key >= self._above:
                break
            self._failed.append(entry)
        if len(self._failed) > 2 * self.keep:  # trimmed in batches: a sort per `keep` additions, not per item
            self._trim()

    def _trim(self) -> None:
        self._failed.sort(key=_by_key)
        if len(self._failed) >= self.keep:
            del self._failed[self.keep:]
            self._above = self._failed[-1].key if self._failed else None

    def summary(self, extra: dict[str, Any] | None = None) -> JobSummary:
        """The record; `extra` is merged into it as the writer gives it (its `status`, when there is one, is the
        writer's verdict)."""
        self._trim()
        plan, totals = self.plan, self.totals
        done = totals["ok"] + totals["failed"] + totals["skipped"]
        shards = tuple(sorted(self.rows, key=lambda row: row.index))
        statuses = {shard.status for shard in shards}
        if statuses <= {"succeeded", NO_SUMMARY} and done == plan.item_count:
            status = "succeeded"
        else:
            status = "failed" if "failed" in statuses else "incomplete"
        items = ItemCounts(plan.item_count, totals["ok"], totals["failed"], totals["skipped"],
                           totals["failed_earlier"], plan.item_count - done, totals["pages"], totals["no_text_pages"])
        summary = JobSummary(plan.job_id, plan.input, plan.output, status, records.utc_iso(), items, plan.skipped,
                             dict(self.codes), tuple(self._failed), shards, failed_items_total=totals["failed"])
        return JobSummary.from_dict({**summary.to_dict(), **extra}) if extra else summary


def build_job_summary(plan: Plan, shard_summaries: dict[int, ShardSummary | None],
                      stored: dict[int, StoredShard], extra: dict[str, Any] | None = None,
                      keep: int = FAILED_ITEMS_IN_SUMMARY) -> JobSummary:
    """Pure: the job summary from every shard's summary and stored counts at once (`JobMerge` over the plan)."""
    merge = JobMerge(plan, keep)
    for entry in plan.shards:
        merge.add(tally_shard(entry, shard_summaries.get(entry.index), stored.get(entry.index), keep))
    return merge.summary(extra)
