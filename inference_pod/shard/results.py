"""Builds the records the loader writes (declared in inference_pod.job): results, heartbeats, shard summary."""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inference_pod.job.plan_records import Item
from inference_pod.job.records import encode, utc_iso
from inference_pod.job.result_record import ERROR, OK, Line, Page, ResultContext, ResultError, ResultRecord, Source
from inference_pod.job.shard_records import ErrorEntry, Heartbeat, ItemCounts, ShardContext, ShardSummary, Throughput
from inference_pod.shard.messages import ItemDone, Outcome
from inference_pod.shard.reading_order import reading_order

log = logging.getLogger("ocrjob.loader")
TERMINATION_LOG_LIMIT = 4096  # bytes Kubernetes keeps of a termination message
ERRORS_KEPT = 100_000  # per shard summary: enough for `ocrjob retry`; the termination message is cut to 4 KiB


def source_record(item: Item, input_uri: str) -> Source:
    return Source(f"{input_uri.rstrip('/')}/{item.key}", item.key, item.etag, item.size)


def ok_record(
    item: Item, input_uri: str, pages: list[Page], context: ResultContext, timing: dict[str, float], kind: str
) -> ResultRecord:
    return ResultRecord(OK, source_record(item, input_uri), context, utc_iso(), tuple(pages), kind,
                        {k: round(v, 4) for k, v in timing.items()})


def error_record(item: Item, input_uri: str, code: str, message: str, context: ResultContext) -> ResultRecord:
    return ResultRecord(ERROR, source_record(item, input_uri), context, utc_iso(), error=ResultError(code, message))


def reading_order_text(lines: list[dict]) -> str:
    """The page's text: rows in reading order (deskewed, column by column: inference_pod.shard.reading_order)
    joined by newlines, the boxes of a row left to right joined by spaces. Boxes without a polygon come last."""
    rows = reading_order([line.get("polygon") for line in lines])
    return "\n".join(" ".join(lines[i]["text"] for i in row) for row in rows)


def page_record(number: int, prediction: dict, blank: Callable[[], bool]) -> Page:
    """The page's record from its prediction. `blank` measures the decoded page; it is called only when no line
    was found, to tell a blank page from text the OCR missed."""
    lines = prediction["lines"]
    return Page(number, prediction["width"], prediction["height"], reading_order_text(lines),
                tuple(Line.from_dict(line) for line in lines), no_text_found=not lines and not blank())


@dataclass
class ShardTally:
    """Counts kept by the coordinator from the outcomes its workers report."""

    total: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # results written by an earlier attempt or run; `failed_earlier` of them are errors
    failed_earlier: int = 0
    pages: int = 0
    no_text_pages: int = 0  # of this attempt's results and of the earlier ones it skipped: all its ok results
    errors: list[ErrorEntry] = field(default_factory=list)
    error_codes: Counter = field(default_factory=Counter)

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped

    def add(self, outcome: ItemDone) -> None:
        self.no_text_pages += outcome.no_text_pages
        if outcome.outcome is Outcome.OK:
            self.ok += 1
            self.pages += outcome.pages
        elif outcome.outcome is Outcome.SKIPPED:
            self.skipped += 1
            if outcome.previous_failed:  # keep earlier errors: `ocrjob retry` needs all of them
                self.failed_earlier += 1
                self._error(outcome, earlier=True)
        else:
            self.failed += 1
            self._error(outcome)

    def _error(self, outcome: ItemDone, earlier: bool = False) -> None:
        code = outcome.code or "unknown"
        self.error_codes[code] += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(ErrorEntry(outcome.key, code, outcome.message or "", earlier))

    def counts(self) -> ItemCounts:
        return ItemCounts(self.total, self.ok, self.failed, self.skipped, self.failed_earlier,
                          self.total - self.done, self.pages, self.no_text_pages)


def progress_record(
    job_id: str, shard: int, state: str, tally: ShardTally, started: float, context: ShardContext
) -> Heartbeat:
    return Heartbeat(job_id, shard, state, tally.counts(), started, time.time(), utc_iso(), socket.gethostname(),
                     context)


def shard_summary(
    job_id: str, shard: int, status: str, exit_code: int, message: str, tally: ShardTally,
    started: float, finished: float, context: ShardContext,
) -> ShardSummary:
    seconds = max(finished - started, 1e-9)
    throughput = Throughput(round((tally.ok + tally.failed) / seconds, 4), round(tally.pages / seconds, 4))
    return ShardSummary(
        status, exit_code, message, tally.counts(), tuple(tally.errors), job_id, shard, dict(tally.error_codes),
        max(0, tally.failed - len(tally.errors)), utc_iso(started), utc_iso(finished), round(seconds, 3),
        throughput, socket.gethostname(), context,
    )


def early_failure_summary(exit_code: int, message: str) -> ShardSummary:
    """The summary of a shard that failed before processing anything (no job id, no counts yet)."""
    return ShardSummary.early_failure(exit_code, message)


def write_termination_log(path: str | None, summary: ShardSummary) -> None:
    if not path:
        return
    try:
        Path(path).write_bytes(termination_message(summary))
    except OSError as exc:  # not in a container (no /dev/termination-log): not worth failing for
        log.debug("termination log %s not written: %s", path, exc)


def termination_message(record: ShardSummary, limit: int = TERMINATION_LOG_LIMIT) -> bytes:
    """The shard summary cut down to what Kubernetes keeps (4 KiB): counts first, then as many errors as fit."""
    summary = record.to_dict()
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
