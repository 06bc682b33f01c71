"""A shard's records: the heartbeat (`progress/NNNNN.json`, rewritten every few seconds while it runs) and its
summary (`summaries/NNNNN.json`, written when it ends, also cut down into the termination message).

Read by the operator (progress, retries), the job summary and the CLI; written by the shard coordinator.
Never imports paddle, kubernetes or inference_pod.shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from inference_pod.job.records import PROGRESS_SCHEMA, SHARD_SUMMARY_SCHEMA, Fields

SHARD_STATUSES = ("succeeded", "interrupted", "failed")


@dataclass(frozen=True, slots=True)
class ItemCounts:
    """Item counts of a shard (or a job): `ok`, `failed` and `skipped` are disjoint; `failed_earlier` of the
    skipped had an error record from an earlier attempt. `no_text_pages`: pages of the ok results (skipped ones
    included) that are not blank but where no text was found (`Page.no_text_found`). A count missing from a
    record reads as 0."""

    NAME: ClassVar[str] = "item counts"
    SCHEMA: ClassVar[str | None] = None

    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failed_earlier: int = 0
    pending: int = 0
    pages: int = 0
    no_text_pages: int = 0

    @classmethod
    def from_dict(cls, doc: Any) -> ItemCounts:
        f = Fields(cls.NAME, doc)
        return cls(*(f.integer(name, 0) for name in ("total", "ok", "failed", "skipped", "failed_earlier",
                                                      "pending", "pages", "no_text_pages")))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                "failed_earlier": self.failed_earlier, "pending": self.pending, "pages": self.pages,
                "no_text_pages": self.no_text_pages}


def no_text_note(items: dict[str, Any]) -> str:
    """How `ocrjob run` and `ocrjob results` mention ItemCounts.no_text_pages (of a stored `items` object): pages
    worth a look, or '' when there are none."""
    count = items.get("no_text_pages") or 0
    return f", {count} not blank but with no text found (pages flagged no_text_found)" if count else ""


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One document with an error record; `earlier` when an earlier attempt or run wrote it."""

    NAME: ClassVar[str] = "error entry"
    SCHEMA: ClassVar[str | None] = None

    key: str
    code: str
    message: str
    earlier: bool = False

    @classmethod
    def from_dict(cls, doc: Any) -> ErrorEntry:
        f = Fields(cls.NAME, doc)
        return cls(f.text("key"), f.text("code"), f.text("message", ""), f.flag("earlier", False))

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"key": self.key, "code": self.code, "message": self.message}
        return {**entry, "earlier": True} if self.earlier else entry


@dataclass(frozen=True, slots=True)
class Throughput:
    NAME: ClassVar[str] = "throughput"
    SCHEMA: ClassVar[str | None] = None

    items_per_second: float
    pages_per_second: float

    @classmethod
    def from_dict(cls, doc: Any) -> Throughput:
        f = Fields(cls.NAME, doc)
        return cls(f.number("items_per_second", 0.0), f.number("pages_per_second", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"items_per_second": self.items_per_second, "pages_per_second": self.pages_per_second}


@dataclass(frozen=True, slots=True)
class ShardContext:
    """Where and how a shard runs, in its heartbeat and its summary: the devices its workers verified, the
    models, workers per device, and the attempt and pod the operator gave it (None when run locally)."""

    devices: tuple[dict[str, Any], ...] = ()
    models: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None
    attempt: str | None = None
    pod: str | None = None

    @classmethod
    def read(cls, f: Fields) -> ShardContext:
        return cls(f.objects("devices", ()), f.mapping("models", {}), f.integer("workers", None, nullable=True),
                   f.text("attempt", None, nullable=True), f.text("pod", None, nullable=True))

    def to_dict(self) -> dict[str, Any]:
        return {"devices": list(self.devices), "models": self.models, "workers": self.workers,
                "attempt": self.attempt, "pod": self.pod}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A running shard's progress; `updated_at` (epoch seconds) and `items` advance while it makes progress."""

    NAME: ClassVar[str] = "heartbeat"
    SCHEMA: ClassVar[str | None] = PROGRESS_SCHEMA
    MAX_BYTES: ClassVar[int] = 1 << 20  # a few hundred bytes written every few seconds; read for every shard

    job_id: str
    shard_index: int
    state: str  # starting, running, then the shard's final status
    items: ItemCounts
    started_at: float
    updated_at: float
    updated: str
    host: str
    context: ShardContext = ShardContext()

    @classmethod
    def from_dict(cls, doc: Any) -> Heartbeat:
        f = Fields(cls.NAME, doc)
        return cls(f.text("job_id"), f.integer("shard_index"), f.text("state"),
                   f.nested("items", ItemCounts.from_dict), f.number("started_at"), f.number("updated_at"),
                   f.text("updated", ""), f.text("host", ""), ShardContext.read(f))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PROGRESS_SCHEMA, "job_id": self.job_id, "shard_index": self.shard_index, "state": self.state,
            "items": self.items.to_dict(), "started_at": self.started_at, "updated_at": self.updated_at,
            "updated": self.updated, "host": self.host, **self.context.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class ShardSummary:
    """How a shard ended. One that failed before processing anything (`early`) has no counts (`items` None),
    no job id and no timing: only status, exit code and message."""

    NAME: ClassVar[str] = "shard summary"
    SCHEMA: ClassVar[str | None] = SHARD_SUMMARY_SCHEMA

    status: str  # one of SHARD_STATUSES
    exit_code: int | None = None
    message: str = ""
    items: ItemCounts | None = None
    errors: tuple[ErrorEntry, ...] = ()
    job_id: str | None = None
    shard_index: int | None = None
    error_codes: dict[str, int] = field(default_factory=dict)
    errors_truncated: int = 0
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    throughput: Throughput | None = None
    host: str | None = None
    context: ShardContext = ShardContext()

    @property
    def early(self) -> bool:
        return self.items is None

    @classmethod
    def early_failure(cls, exit_code: int, message: str) -> ShardSummary:
        return cls("failed", exit_code, message)

    @classmethod
    def from_dict(cls, doc: Any) -> ShardSummary:
        f = Fields(cls.NAME, doc)
        return cls(
            f.choice("status", SHARD_STATUSES), f.integer("exit_code", None, nullable=True), f.text("message", ""),
            f.nested("items", ItemCounts.from_dict, None, nullable=True), f.each("errors", ErrorEntry.from_dict, ()),
            f.text("job_id", None, nullable=True), f.integer("shard_index", None, nullable=True),
            f.tallies("error_codes", {}), f.integer("errors_truncated", 0), f.text("started", None, nullable=True),
            f.text("finished", None, nullable=True), f.number("seconds", None, nullable=True),
            f.nested("throughput", Throughput.from_dict, None, nullable=True), f.text("host", None, nullable=True),
            ShardContext.read(f),
        )

    def to_dict(self) -> dict[str, Any]:
        errors = [error.to_dict() for error in self.errors]
        if self.items is None:
            return {"schema": SHARD_SUMMARY_SCHEMA, "status": self.status, "exit_code": self.exit_code,
                    "message": self.message, "items": None, "errors": errors}
        return {
            "schema": SHARD_SUMMARY_SCHEMA, "job_id": self.job_id, "shard_index": self.shard_index,
            "status": self.status, "exit_code": self.exit_code, "message": self.message,
            "items": self.items.to_dict(), "error_codes": self.error_codes, "errors": errors,
            "errors_truncated": self.errors_truncated, "started": self.started, "finished": self.finished,
            "seconds": self.seconds, "throughput": self.throughput.to_dict() if self.throughput else None,
            "host": self.host, **self.context.to_dict(),
        }

