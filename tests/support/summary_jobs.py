"""Finished jobs for tests of the job summary and of `ocrjob results` / `ocrjob retry`: planned by the real planner,
each shard's results (ok or error records) and a covering shard summary written as a shard that succeeded leaves
them. Any `Storage` will do."""

from __future__ import annotations

from inference_pod.job import layout, records
from inference_pod.job.plan import ShardingPolicy, plan_job
from inference_pod.job.plan_records import Item, Manifest, Plan
from inference_pod.job.result_record import ResultContext
from inference_pod.job.storage import ObjectInfo, Storage
from inference_pod.shard import results
from tests.support.memory_storage import MemoryStorage

INPUT, OUTPUT = "s3://bkt/in", "s3://bkt/out"
ERROR_CODE = "corrupt"


def doc_key(i: int) -> str:
    return f"scans/doc-{i:06d}.png"


def failing_job(dest: Storage, job_id: str, documents: int, failed: set[int], shards: int) -> Plan:
    """A job of `documents` documents (`doc_key(i)`) over `shards` shards, finished: document i has an error record
    when i is in `failed`, an ok result otherwise; every shard succeeded and its summary lists its errors."""
    source = MemoryStorage(INPUT, lambda: (ObjectInfo(doc_key(i), 1000 + i, "e") for i in range(documents)))
    plan = plan_job(job_id, INPUT, OUTPUT, source, dest, ShardingPolicy(shard_count=shards))
    for entry in plan.shards:
        manifest = records.load(dest, entry.manifest, Manifest)
        context = ResultContext(job_id, entry.index)
        errors = []
        for item in manifest.items:
            if int(item.key[-10:-4]) in failed:
                record = results.error_record(Item(item.key, item.size), INPUT, ERROR_CODE, "bad bytes", context)
                errors.append({"key": item.key, "code": ERROR_CODE, "message": "bad bytes"})
            else:
                record = results.ok_record(Item(item.key, item.size), INPUT, [], context, {}, "png")
            dest.put(layout.result_key(item.key), records.encode(record.to_dict()))
        summary = {"schema": records.SHARD_SUMMARY_SCHEMA, "status": "succeeded", "job_id": job_id,
                   "shard_index": entry.index, "error_codes": {ERROR_CODE: len(errors)} if errors else {},
                   "errors": errors, "items": {"total": entry.items, "ok": entry.items - len(errors),
                                               "failed": len(errors), "pages": entry.items - len(errors)}}
        dest.put(layout.shard_summary_key(job_id, entry.index), records.encode(summary))
    return plan
