"""The job-level summary and results index, written from the plan, the result objects and the shard summaries in
storage (counts: `stored_counts`; the merge: `summary_merge`).

One shard at a time: the output is listed once into `PresentResults` (8 bytes a stored result), then each shard's
manifest and summary are read, its documents counted, its index part (`layout.index_part_key`) and, when it has
failures, its failed list (`layout.failed_items_key`) written, and only its `ShardTally` kept. SUMMARY_WORKERS shards
are in hand at once, so the keys held are at most that many of the largest shard's, never the job's; what grows with
the job is 8 bytes a stored result and one row a shard. index.json (the list of parts) and summary.json are written
last: a reader that finds summary.json finds the files it names.
Requests: the listing (N/1000), two GETs a shard (manifest, shard summary) as before, plus one PUT a shard (its index
part) and one a shard with failures; a GET per result only where no shard summary covers it (`stored_counts`).

Used by the local runner at the end of `ocrjob run` and by the operator when a job finishes.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from inference_pod.job import layout, records
from inference_pod.job.bounded import map_bounded
from inference_pod.job.plan import read_plan
from inference_pod.job.plan_records import Manifest, PlanShard
from inference_pod.job.shard_records import ShardSummary
from inference_pod.job.storage import ObjectNotFound, Storage
from inference_pod.job.stored_counts import PresentResults, count_shard, result_reader
from inference_pod.job.summary_merge import NO_SUMMARY, JobMerge, ShardTally, build_job_summary, tally_shard
from inference_pod.job.summary_records import (
    FAILED_ITEMS_IN_SUMMARY,
    IndexPart,
    ResultsIndex,
    UnreadableManifest,
    index_part,
)

__all__ = ["NO_SUMMARY", "SUMMARY_WORKERS", "build_job_summary", "write_job_summary"]

# Shards read, counted and written at once: each holds one shard's keys, and does its GETs and PUTs one after
# another, well inside the operator's 16 S3 connections (OPERATOR_LIMITS).
SUMMARY_WORKERS = 8


@dataclass(frozen=True)
class ShardOutcome:
    """What a shard leaves once its files are written: its tally, and its index part or why it has none."""

    tally: ShardTally
    part: IndexPart | None
    unreadable: UnreadableManifest | None


def read_shard_summaries(dest: Storage, job_id: str, shard_count: int) -> dict[int, ShardSummary | None]:
    """Each shard's summary; None for a shard without one (or with an object that is not a shard summary)."""
    return {index: records.read(dest, layout.shard_summary_key(job_id, index), ShardSummary)
            for index in range(shard_count)}


def summarise_shard(dest: Storage, job_id: str, entry: PlanShard, present: Container[str],
                    keep: int = FAILED_ITEMS_IN_SUMMARY) -> ShardOutcome:
    """Count one shard from storage and write its index part and failed list. A manifest that cannot be read is
    named instead (its documents count as pending, and it has no index part)."""
    summary = records.read(dest, layout.shard_summary_key(job_id, entry.index), ShardSummary)
    try:
        keys = [item.key for item in records.load(dest, entry.manifest, Manifest).items]
    except (ObjectNotFound, records.RecordError) as exc:
        return ShardOutcome(tally_shard(entry, summary, None, keep), None,
                            UnreadableManifest(entry.index, entry.manifest, f"{exc}"))
    found = count_shard(entry.index, keys, present, summary, result_reader(dest))
    if found.errors:
        failed = sorted(found.errors, key=lambda e: e.key)
        dest.put(layout.failed_items_key(job_id, entry.index), records.encode_lines(e.to_dict() for e in failed),
                 "application/x-ndjson")
    part = layout.index_part_key(job_id, entry.index)
    dest.put(part, index_part(keys, entry.index), "application/x-ndjson")
    return ShardOutcome(tally_shard(entry, summary, found, keep), IndexPart(entry.index, part, len(keys)), None)


def write_job_summary(dest: Storage, job_id: str, extra: dict[str, Any] | None = None,
                      workers: int = SUMMARY_WORKERS) -> dict[str, Any]:
    """The shards' index parts and failed lists, then index.json, then summary.json; returns the summary as
    written."""
    plan = read_plan(dest, job_id)
    if plan is None:
        raise ObjectNotFound(f"job {job_id} has no plan in {dest.uri}")
    present = PresentResults.of(dest.list(""))
    merge = JobMerge(plan)
    parts: list[IndexPart] = []
    unreadable: list[UnreadableManifest] = []
    for outcome in map_bounded(summarise_shard, ((dest, job_id, entry, present) for entry in plan.shards), workers,
                               "ocrjob-summary"):
        merge.add(outcome.tally)
        if outcome.part is not None:
            parts.append(outcome.part)
        if outcome.unreadable is not None:
            unreadable.append(outcome.unreadable)
    index = ResultsIndex(plan.job_id, plan.output, tuple(parts), tuple(unreadable))
    dest.put(layout.job_index_key(job_id), records.encode(index.to_dict()))
    summary = merge.summary(extra).to_dict()
    dest.put(layout.job_summary_key(job_id), json.dumps(summary, indent=1).encode())
    return summary
