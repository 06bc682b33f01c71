"""Where things live in the output location. One place, so the operator, loader and CLI agree.

For every input object ``<input>/<rel>`` the result is ``<output>/<rel>.json``. Job bookkeeping lives
under ``<output>/_ocrjob/<job-id>/``:

    plan.json               the plan's commit: created only if absent, so exactly once, and never rewritten;
                            it records its plan id and the manifest key of each shard
    plans/<plan-id>/shards/NNNNN.json
                            shard manifests (the items of each shard) of one planning attempt; only those of the
                            plan id in plan.json count (a losing attempt's are orphans, deleted best-effort).
                            A pod of an Indexed Job gets the pattern (`{index}` for NNNNN) and fills in its index
    probes/<id>.json        short-lived objects of the planner's check that the store honours create-if-absent
    progress/NNNNN.json     heartbeat/progress records, rewritten every few seconds by a running shard
    summaries/NNNNN.json    the final summary of each shard
    summary.json            the job summary: counts, shards and the first FAILED_ITEMS_IN_SUMMARY failed documents
    failed/NNNNN.jsonl      every failed document of shard NNNNN, one error entry a line, in key order; written only
                            for a shard whose summary entry counts `failed` > 0 (a file left from an earlier write
                            for a shard that now has none is not read: the summary says which files count)
    index/NNNNN.jsonl       one line per planned document of shard NNNNN: its key, its result key and the shard
    index.json              the results index: lists the index/ objects (one per shard with a readable manifest)

Written once per shard, `failed/` and `index/` keep every file bounded by its shard, never by the job.
"""

from __future__ import annotations

import re
import secrets

RESULT_SUFFIX = ".json"
INDEX_PLACEHOLDER = "{index}"  # in a manifest pattern: the shard index, as the pod of an Indexed Job learns it
JOB_DIR = "_ocrjob"
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RANDOM_ID_HEX = 16  # 64 random bits: two planning attempts never collide
_RANDOM_ID = re.compile(rf"^[0-9a-f]{{{RANDOM_ID_HEX}}}$")


def result_key(rel: str) -> str:
    """The result object key (relative to the output root) for an input key relative to the input root."""
    return rel.lstrip("/") + RESULT_SUFFIX


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise ValueError(
            f"job id {job_id!r} is not usable as a path segment: use letters, digits, '.', '_' or '-' "
            "(at most 128 characters)"
        )
    return job_id


def job_dir(job_id: str) -> str:
    return f"{JOB_DIR}/{check_job_id(job_id)}"


def plan_key(job_id: str) -> str:
    return f"{job_dir(job_id)}/plan.json"


def plan_manifest_key(job_id: str, plan_id: str, index: int) -> str:
    """Where one planning attempt writes a shard's manifest. Readers take the key from the plan's entry for the
    shard (`PlanShard.manifest`), or fill in the pattern the plan's manifests follow (`plan_manifest_pattern`)."""
    return fill_index(plan_manifest_pattern(job_id, plan_id), index)


def plan_manifest_pattern(job_id: str, plan_id: str) -> str:
    """Every shard manifest key of one planning attempt, with `INDEX_PLACEHOLDER` for the shard index."""
    return f"{job_dir(job_id)}/plans/{check_random_id(plan_id)}/shards/{INDEX_PLACEHOLDER}.json"


def fill_index(pattern: str, index: int) -> str:
    if index < 0:
        raise ValueError(f"a shard index is >= 0, got {index}")
    return pattern.replace(INDEX_PLACEHOLDER, f"{index:05d}")


def random_id() -> str:
    """A plan id (or probe id): random per planning attempt, so two attempts never share a key."""
    return secrets.token_hex(RANDOM_ID_HEX // 2)


def check_random_id(value: str) -> str:
    if not _RANDOM_ID.match(value):
        raise ValueError(f"{value!r} is not a plan id ({RANDOM_ID_HEX} lowercase hex digits)")
    return value


def probe_key(job_id: str, probe_id: str) -> str:
    return f"{job_dir(job_id)}/probes/{check_random_id(probe_id)}.json"


def progress_key(job_id: str, index: int) -> str:
    return f"{job_dir(job_id)}/progress/{index:05d}.json"


def shard_summary_key(job_id: str, index: int) -> str:
    return f"{job_dir(job_id)}/summaries/{index:05d}.json"


def job_summary_key(job_id: str) -> str:
    return f"{job_dir(job_id)}/summary.json"


def job_index_key(job_id: str) -> str:
    return f"{job_dir(job_id)}/index.json"


def index_part_key(job_id: str, index: int) -> str:
    """Shard `index`'s part of the results index (JSON lines); index.json lists the parts written."""
    return f"{job_dir(job_id)}/index/{index:05d}.jsonl"


def failed_items_dir(job_id: str) -> str:
    return f"{job_dir(job_id)}/failed/"


def failed_items_key(job_id: str, index: int) -> str:
    """Every failed document of shard `index` (JSON lines), for a shard the job summary counts failures of."""
    return f"{failed_items_dir(job_id)}{index:05d}.jsonl"
