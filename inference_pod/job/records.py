"""The records in storage, by schema name, and the one way to encode and read them.

Every record OcrJob writes carries a `schema` (below); `encode` is how records are written and `read_record`
the one reader (it returns None for a missing object, and for an object that is not a JSON mapping of that
schema: a half-written or foreign object is treated as absent, never as a crash).
"""

from __future__ import annotations

import json
import time
from typing import Any

from inference_pod.job.errors import ObjectNotFound

RESULT_SCHEMA = "ocrjob.result/v1"
PROGRESS_SCHEMA = "ocrjob.progress/v1"
SHARD_SUMMARY_SCHEMA = "ocrjob.shard-summary/v1"
PLAN_SCHEMA = "ocrjob.plan/v1"
MANIFEST_SCHEMA = "ocrjob.shard/v1"
JOB_SUMMARY_SCHEMA = "ocrjob.job-summary/v1"
INDEX_SCHEMA = "ocrjob.index/v1"


def utc_iso(epoch: float | None = None) -> str:
    """RFC 3339 UTC with second precision, the one timestamp format of every record and status."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(data: bytes, schema: str | None = None) -> dict[str, Any] | None:
    """A record from bytes; None when the bytes are not a JSON object (of `schema`, when given)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or (schema is not None and doc.get("schema", schema) != schema):
        return None
    return doc


def read_record(storage: Any, key: str, schema: str | None = None) -> dict[str, Any] | None:
    """The record at `key` of `storage`, or None when it is missing or unreadable as a record. Storage errors
    other than "not found" propagate (typed, `inference_pod.job.errors`)."""
    try:
        data = storage.get(key)
    except ObjectNotFound:
        return None
    return decode(data, schema)
