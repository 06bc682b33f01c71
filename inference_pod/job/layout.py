"""Where things live in the output location. One place, so the operator, loader and CLI agree.

For every input object ``<input>/<rel>`` the result is ``<output>/<rel>.json``. Job bookkeeping lives
under ``<output>/_ocrjob/<job-id>/``:

    plan.json               the plan index (written last: its presence means the plan is complete)
    shards/NNNNN.json       shard manifests (the items of each shard)
    progress/NNNNN.json     heartbeat/progress records, rewritten every few seconds by a running shard
    summaries/NNNNN.json    the final summary of each shard
    summary.json            the job summary; index.json lists every result object
"""

from __future__ import annotations

import re

RESULT_SUFFIX = ".json"
JOB_DIR = "_ocrjob"
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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


def shard_manifest_key(job_id: str, index: int) -> str:
    return f"{job_dir(job_id)}/shards/{index:05d}.json"


def progress_key(job_id: str, index: int) -> str:
    return f"{job_dir(job_id)}/progress/{index:05d}.json"


def shard_summary_key(job_id: str, index: int) -> str:
    return f"{job_dir(job_id)}/summaries/{index:05d}.json"


def job_summary_key(job_id: str) -> str:
    return f"{job_dir(job_id)}/summary.json"


def job_index_key(job_id: str) -> str:
    return f"{job_dir(job_id)}/index.json"
