"""The job-level summary and results index, merged from the plan and the shard summaries in storage.

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
from inference_pod.job.summary_records import IndexEntry, JobShard, JobSummary, ResultsIndex, UnreadableManifest

_COUNTED = ("ok", "failed", "skipped", "failed_earlier", "pages")


def read_shard_summaries(dest: Storage, job_id: str, shard_count: int) -> dict[int, ShardSummary | None]:
    """Each shard's summary; None for a shard without one (or with an object that is not a shard summary)."""
    return {index: records.read(dest, layout.shard_summary_key(job_id, index), ShardSummary)
            for index in range(shard_count)}


def build_job_summary(plan: Plan, shard_summaries: dict[int, ShardSummary | None],
                      extra: dict[str, Any] | None = None) -> JobSummary:
    """Pure: merge shard summaries. A shard without a summary counts as pending. `extra` is merged into the
    record as the writer gives it (its `status`, when there is one, is the writer's verdict)."""
    totals: Counter = Counter()
    codes: Counter = Counter()
    failed_items: list[ErrorEntry] = []
    shards = []
    for entry in plan.shards:
        summary = shard_summaries.get(entry.index)
        if summary is None:
            shards.append(JobShard(entry.index, entry.items, "pending"))
            continue
        counts = summary.items or ItemCounts()
        for name in _COUNTED:
            totals[name] += getattr(counts, name)
        codes.update(summary.error_codes)
        failed_items.extend(summary.errors)
        shards.append(JobShard(entry.index, entry.items, summary.status, summary.context.devices, summary.seconds,
                               summary.throughput, summary.context.attempt))
    done = totals["ok"] + totals["failed"] + totals["skipped"]
    statuses = {shard.status for shard in shards}
    status = "succeeded" if statuses == {"succeeded"} else ("failed" if "failed" in statuses else "incomplete")
    items = ItemCounts(plan.item_count, totals["ok"], totals["failed"], totals["skipped"], totals["failed_earlier"],
                       plan.item_count - done, totals["pages"])
    summary = JobSummary(plan.job_id, plan.input, plan.output, status, records.utc_iso(), items, plan.skipped,
                         dict(codes), tuple(sorted(failed_items, key=lambda e: e.key)), tuple(shards))
    return JobSummary.from_dict({**summary.to_dict(), **extra}) if extra else summary


def build_index(dest: Storage, plan: Plan) -> ResultsIndex:
    """Every planned input with its result object key, read back from the shard manifests. A manifest that
    cannot be read is named in `unreadable_manifests` instead of failing the whole index."""
    entries: list[IndexEntry] = []
    unreadable: list[UnreadableManifest] = []
    for shard in plan.shards:
        try:
            manifest = records.load(dest, shard.manifest, Manifest)
        except (ObjectNotFound, records.RecordError) as exc:
            unreadable.append(UnreadableManifest(shard.index, shard.manifest, f"{exc}"))
            continue
        entries.extend(IndexEntry(item.key, layout.result_key(item.key), shard.index) for item in manifest.items)
    return ResultsIndex(plan.job_id, plan.output, tuple(entries), tuple(unreadable))


def write_job_summary(dest: Storage, job_id: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json and index.json; returns the summary as written."""
    plan = read_plan(dest, job_id)
    if plan is None:
        raise ObjectNotFound(f"job {job_id} has no plan in {dest.uri}")
    summary = build_job_summary(plan, read_shard_summaries(dest, job_id, plan.shard_count), extra).to_dict()
    dest.put(layout.job_summary_key(job_id), json.dumps(summary, indent=1).encode())
    dest.put(layout.job_index_key(job_id), json.dumps(build_index(dest, plan).to_dict()).encode())
    return summary
