"""The job-level summary and results index, merged from the plan and the shard summaries in storage.

Used by the local runner at the end of `ocrjob run` and by the operator when a job finishes.
"""

from __future__ import annotations

import json
from collections import Counter

from inference_pod.job import layout
from inference_pod.job.plan import load_plan
from inference_pod.job.records import INDEX_SCHEMA, JOB_SUMMARY_SCHEMA, utc_iso
from inference_pod.job.storage import ObjectNotFound, Storage


def read_shard_summaries(dest: Storage, job_id: str, shard_count: int) -> dict[int, dict | None]:
    found: dict[int, dict | None] = {}
    for index in range(shard_count):
        try:
            found[index] = json.loads(dest.get(layout.shard_summary_key(job_id, index)))
        except ObjectNotFound:
            found[index] = None
    return found


def build_job_summary(plan: dict, shard_summaries: dict[int, dict | None], extra: dict | None = None) -> dict:
    """Pure: merge shard summaries. A shard without a summary counts as pending."""
    totals = Counter()
    codes: Counter = Counter()
    failed_items: list[dict] = []
    shards = []
    for entry in plan["shards"]:
        summary = shard_summaries.get(entry["index"])
        items = (summary or {}).get("items") or {}
        for name in ("ok", "failed", "skipped", "failed_earlier", "pages"):
            totals[name] += items.get(name, 0)
        codes.update((summary or {}).get("error_codes", {}))
        failed_items.extend((summary or {}).get("errors", []))
        shards.append({
            "index": entry["index"],
            "items": entry["items"],
            "status": (summary or {}).get("status", "pending"),
            "devices": (summary or {}).get("devices", []),
            "seconds": (summary or {}).get("seconds"),
            "throughput": (summary or {}).get("throughput"),
            "attempt": (summary or {}).get("attempt"),
        })
    done = totals["ok"] + totals["failed"] + totals["skipped"]
    statuses = {shard["status"] for shard in shards}
    status = "succeeded" if statuses == {"succeeded"} else ("failed" if "failed" in statuses else "incomplete")
    return {
        "schema": JOB_SUMMARY_SCHEMA,
        "job_id": plan["job_id"],
        "input": plan["input"],
        "output": plan["output"],
        "status": status,
        "created": utc_iso(),
        "items": {
            "total": plan["item_count"], "ok": totals["ok"], "failed": totals["failed"],
            "skipped": totals["skipped"], "failed_earlier": totals["failed_earlier"],
            "pending": plan["item_count"] - done, "pages": totals["pages"],
        },
        "skipped_at_planning": plan.get("skipped", {}),
        "error_codes": dict(codes),
        "failed_items": sorted(failed_items, key=lambda e: e["key"]),
        "shards": shards,
        **(extra or {}),
    }


def build_index(dest: Storage, plan: dict) -> dict:
    """Every planned input with its result object key, read back from the shard manifests. A manifest that
    cannot be read is named in `unreadable_manifests` instead of failing the whole index."""
    entries, unreadable = [], []
    for shard in plan["shards"]:
        try:
            items = json.loads(dest.get(shard["manifest"]))["items"]
        except (ObjectNotFound, ValueError, KeyError, TypeError) as exc:
            unreadable.append({"shard": shard["index"], "manifest": shard["manifest"], "error": f"{exc}"})
            continue
        entries.extend(
            {"source": item["key"], "result": layout.result_key(item["key"]), "shard": shard["index"]}
            for item in items
        )
    return {
        "schema": INDEX_SCHEMA, "job_id": plan["job_id"], "output": plan["output"], "results": entries,
        "unreadable_manifests": unreadable,
    }


def write_job_summary(dest: Storage, job_id: str, extra: dict | None = None) -> dict:
    plan = load_plan(dest, job_id)
    if plan is None:
        raise ObjectNotFound(f"job {job_id} has no plan in {dest.uri}")
    summary = build_job_summary(plan, read_shard_summaries(dest, job_id, plan["shard_count"]), extra)
    dest.put(layout.job_summary_key(job_id), json.dumps(summary, indent=1).encode())
    dest.put(layout.job_index_key(job_id), json.dumps(build_index(dest, plan)).encode())
    return summary
