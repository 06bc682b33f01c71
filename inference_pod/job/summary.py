"""The job-level summary and results index, merged from the plan, the result objects and the shard summaries
in storage (counts: `stored_counts`).

Used by the local runner at the end of `ocrjob run` and by the operator when a job finishes.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from inference_pod.job import layout, records
from inference_pod.job.plan import read_plan
from inference_pod.job.plan_records import Manifest, Plan
from inference_pod.job.shard_records import ErrorEntry, ItemCounts, ShardSummary
from inference_pod.job.storage import ObjectNotFound, Storage
from inference_pod.job.stored_counts import StoredShard, count_stored
from inference_pod.job.summary_records import IndexEntry, JobShard, JobSummary, ResultsIndex, UnreadableManifest

NO_SUMMARY = "no_summary"  # a shard without a summary whose documents all have results (not pending)


def read_shard_summaries(dest: Storage, job_id: str, shard_count: int) -> dict[int, ShardSummary | None]:
    """Each shard's summary; None for a shard without one (or with an object that is not a shard summary)."""
    return {index: records.read(dest, layout.shard_summary_key(job_id, index), ShardSummary)
            for index in range(shard_count)}


def build_job_summary(plan: Plan, shard_summaries: dict[int, ShardSummary | None],
                      stored: dict[int, StoredShard], extra: dict[str, Any] | None = None) -> JobSummary:
    """Pure: the counts come from storage (`stored`: what each shard's documents have there), the rest (devices,
    seconds, throughput, pages, how many results an earlier attempt wrote) from the shard summaries. A shard
    with every document's result is not pending, summary or not. `extra` is merged into the record as the
    writer gives it (its `status`, when there is one, is the writer's verdict).

    Job counts, disjoint: `failed` is every error record; `ok` + `skipped` every ok result, `skipped` those an
    earlier attempt wrote (as the last summary of each shard says); `failed_earlier` how many of `failed` an
    earlier attempt wrote; `pending` the documents without a result; `no_text_pages` the ok results' pages flagged
    `no_text_found` (stored counts too)."""
    totals: Counter = Counter()
    codes: Counter = Counter()
    failed_items: list[ErrorEntry] = []
    shards = []
    for entry in plan.shards:
        summary = shard_summaries.get(entry.index)
        found = stored.get(entry.index) or StoredShard(entry.index, entry.items, 0, 0)
        counts = (summary.items if summary else None) or ItemCounts()
        skipped_ok = min(max(0, counts.skipped - counts.failed_earlier), found.ok)
        totals.update(ok=found.ok - skipped_ok, skipped=skipped_ok, failed=found.failed, pages=counts.pages,
                      failed_earlier=sum(1 for e in found.errors if e.earlier), no_text_pages=found.no_text_pages)
        codes.update(e.code for e in found.errors)
        failed_items.extend(found.errors)
        pending = max(0, entry.items - found.present)
        if summary is None:
            shards.append(JobShard(entry.index, entry.items, "pending" if pending else NO_SUMMARY,
                                   ok=found.ok, failed=found.failed, pending=pending))
            continue
        shards.append(JobShard(entry.index, entry.items, summary.status, summary.context.devices, summary.seconds,
                               summary.throughput, summary.context.attempt, found.ok, found.failed, pending))
    done = totals["ok"] + totals["failed"] + totals["skipped"]
    statuses = {shard.status for shard in shards}
    if statuses <= {"succeeded", NO_SUMMARY} and done == plan.item_count:
        status = "succeeded"
    else:
        status = "failed" if "failed" in statuses else "incomplete"
    items = ItemCounts(plan.item_count, totals["ok"], totals["failed"], totals["skipped"], totals["failed_earlier"],
                       plan.item_count - done, totals["pages"], totals["no_text_pages"])
    summary = JobSummary(plan.job_id, plan.input, plan.output, status, records.utc_iso(), items, plan.skipped,
                         dict(codes), tuple(sorted(failed_items, key=lambda e: e.key)), tuple(shards))
    return JobSummary.from_dict({**summary.to_dict(), **extra}) if extra else summary


def read_manifests(dest: Storage, plan: Plan) -> tuple[dict[int, Manifest], list[UnreadableManifest]]:
    """Each shard's manifest, from its plan entry's location; one that cannot be read is named instead."""
    manifests: dict[int, Manifest] = {}
    unreadable: list[UnreadableManifest] = []
    for shard in plan.shards:
        try:
            manifests[shard.index] = records.load(dest, shard.manifest, Manifest)
        except (ObjectNotFound, records.RecordError) as exc:
            unreadable.append(UnreadableManifest(shard.index, shard.manifest, f"{exc}"))
    return manifests, unreadable


def build_index(dest: Storage, plan: Plan, manifests: tuple[dict[int, Manifest], list[UnreadableManifest]] | None
                = None) -> ResultsIndex:
    """Every planned input with its result object key, read back from the shard manifests (`manifests`, when
    already read). A manifest that cannot be read is named in `unreadable_manifests` instead of failing the
    whole index."""
    read, unreadable = manifests if manifests is not None else read_manifests(dest, plan)
    entries = [IndexEntry(item.key, layout.result_key(item.key), shard.index)
               for shard in plan.shards if shard.index in read for item in read[shard.index].items]
    return ResultsIndex(plan.job_id, plan.output, tuple(entries), tuple(unreadable))


def write_job_summary(dest: Storage, job_id: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json and index.json; returns the summary as written."""
    plan = read_plan(dest, job_id)
    if plan is None:
        raise ObjectNotFound(f"job {job_id} has no plan in {dest.uri}")
    manifests = read_manifests(dest, plan)
    summaries = read_shard_summaries(dest, job_id, plan.shard_count)
    # A shard whose manifest cannot be read has no known documents: it counts as all pending.
    stored = count_stored(dest, {i: tuple(item.key for item in m.items) for i, m in manifests[0].items()}, summaries)
    summary = build_job_summary(plan, summaries, stored, extra).to_dict()
    dest.put(layout.job_summary_key(job_id), json.dumps(summary, indent=1).encode())
    dest.put(layout.job_index_key(job_id), json.dumps(build_index(dest, plan, manifests).to_dict()).encode())
    return summary
