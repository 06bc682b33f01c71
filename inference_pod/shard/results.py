"""The records the loader writes: one result object per input, progress heartbeats, the shard summary."""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from inference_pod.job.plan import Item
from inference_pod.job.records import PROGRESS_SCHEMA, RESULT_SCHEMA, SHARD_SUMMARY_SCHEMA, encode, utc_iso

log = logging.getLogger("ocrjob.loader")
TERMINATION_LOG_LIMIT = 4096  # bytes Kubernetes keeps of a termination message
ERRORS_KEPT = 100_000  # per shard summary: enough for `ocrjob retry`; the termination message is cut to 4 KiB


def source_record(item: Item, input_uri: str) -> dict:
    return {"uri": f"{input_uri.rstrip('/')}/{item.key}", "key": item.key, "etag": item.etag, "size": item.size}


def ok_record(
    item: Item, input_uri: str, pages: list[dict], context: dict, timing: dict[str, float], kind: str
) -> dict:
    return {
        "schema": RESULT_SCHEMA,
        "status": "ok",
        "source": source_record(item, input_uri),
        "format": kind,
        "page_count": len(pages),
        "text": "\n\n".join(page["text"] for page in pages),
        "pages": pages,
        **context,
        "timing": {k: round(v, 4) for k, v in timing.items()},
        "created": utc_iso(),
        "error": None,
    }


def error_record(item: Item, input_uri: str, code: str, message: str, context: dict) -> dict:
    return {
        "schema": RESULT_SCHEMA,
        "status": "error",
        "source": source_record(item, input_uri),
        "page_count": 0,
        "text": "",
        "pages": [],
        **context,
        "created": utc_iso(),
        "error": {"code": code, "message": message},
    }


def reading_order_text(lines: list[dict]) -> str:
    """Join detected boxes into text rows: boxes whose vertical centres lie within half a box height of
    the row's are one row, read left to right; rows top to bottom."""
    boxes = []
    for line in lines:
        points = line.get("polygon") or [[0, len(boxes) * 1000]]
        ys, xs = [p[1] for p in points], [p[0] for p in points]
        boxes.append(((min(ys) + max(ys)) / 2, (max(ys) - min(ys)) / 2, min(xs), line["text"]))
    rows: list[tuple[float, list[tuple[float, str]]]] = []
    for centre, half_height, left, text in sorted(boxes):
        if rows and abs(centre - rows[-1][0]) <= max(half_height, 1):
            rows[-1][1].append((left, text))
        else:
            rows.append((centre, [(left, text)]))
    return "\n".join(" ".join(text for _, text in sorted(items)) for _, items in rows)


def page_record(number: int, prediction: dict) -> dict:
    lines = prediction["lines"]
    return {
        "page": number,
        "width": prediction["width"],
        "height": prediction["height"],
        "text": reading_order_text(lines),
        "lines": lines,
    }


@dataclass
class ShardTally:
    """Counts kept by the coordinator from the outcomes its workers report."""

    total: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # results written by an earlier attempt or run; `failed_earlier` of them are errors
    failed_earlier: int = 0
    pages: int = 0
    errors: list[dict] = field(default_factory=list)
    error_codes: Counter = field(default_factory=Counter)

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped

    def add(self, outcome: dict) -> None:
        status = outcome["status"]
        if status == "ok":
            self.ok += 1
            self.pages += outcome.get("pages", 0)
        elif status == "skipped":
            self.skipped += 1
            if outcome.get("previous") == "error":  # keep earlier errors: `ocrjob retry` needs all of them
                self.failed_earlier += 1
                self._error(outcome, earlier=True)
        else:
            self.failed += 1
            self._error(outcome)

    def _error(self, outcome: dict, earlier: bool = False) -> None:
        code = outcome.get("code") or "unknown"
        self.error_codes[code] += 1
        if len(self.errors) < ERRORS_KEPT:
            entry = {"key": outcome["key"], "code": code, "message": outcome.get("message") or ""}
            self.errors.append({**entry, "earlier": True} if earlier else entry)

    def counts(self) -> dict:
        return {
            "total": self.total, "ok": self.ok, "failed": self.failed, "skipped": self.skipped,
            "failed_earlier": self.failed_earlier, "pending": self.total - self.done, "pages": self.pages,
        }


def progress_record(job_id: str, shard: int, state: str, tally: ShardTally, started: float, extra: dict) -> dict:
    now = time.time()
    return {
        "schema": PROGRESS_SCHEMA, "job_id": job_id, "shard_index": shard, "state": state,
        "items": tally.counts(), "started_at": started, "updated_at": now, "updated": utc_iso(),
        "host": socket.gethostname(), **extra,
    }


def shard_summary(
    job_id: str, shard: int, status: str, exit_code: int, message: str, tally: ShardTally,
    started: float, finished: float, extra: dict,
) -> dict:
    seconds = max(finished - started, 1e-9)
    return {
        "schema": SHARD_SUMMARY_SCHEMA, "job_id": job_id, "shard_index": shard, "status": status,
        "exit_code": exit_code, "message": message, "items": tally.counts(),
        "error_codes": dict(tally.error_codes), "errors": tally.errors,
        "errors_truncated": max(0, tally.failed - len(tally.errors)),
        "started": utc_iso(started),
        "finished": utc_iso(finished),
        "seconds": round(seconds, 3),
        "throughput": {
            "items_per_second": round((tally.ok + tally.failed) / seconds, 4),
            "pages_per_second": round(tally.pages / seconds, 4),
        },
        "host": socket.gethostname(), **extra,
    }


def early_failure_summary(exit_code: int, message: str) -> dict:
    """The summary of a shard that failed before processing anything (no job id, no counts yet)."""
    return {"schema": SHARD_SUMMARY_SCHEMA, "status": "failed", "exit_code": exit_code, "message": message,
            "items": None, "errors": []}


def write_termination_log(path: str | None, summary: dict) -> None:
    if not path:
        return
    try:
        Path(path).write_bytes(termination_message(summary))
    except OSError as exc:  # not in a container (no /dev/termination-log): not worth failing for
        log.debug("termination log %s not written: %s", path, exc)


def termination_message(summary: dict, limit: int = TERMINATION_LOG_LIMIT) -> bytes:
    """The shard summary cut down to what Kubernetes keeps (4 KiB): counts first, then as many errors as fit."""
    compact = {
        k: summary.get(k)
        for k in ("schema", "job_id", "shard_index", "status", "exit_code", "items", "seconds", "error_codes")
    }
    compact["message"] = (summary.get("message") or "")[:600]
    devices = summary.get("devices") or []
    compact["device"] = devices[0] if devices else None
    compact["errors"] = []
    data = encode(compact)
    for error in summary.get("errors", []):
        trial = dict(compact, errors=[*compact["errors"], {**error, "message": error["message"][:200]}])
        encoded = encode(trial)
        if len(encoded) > limit:
            break
        compact, data = trial, encoded
    if len(data) > limit:  # only if the message itself is huge
        compact["message"] = compact["message"][:100]
        compact["error_codes"] = {}
        data = encode(compact)
    return data[:limit]
