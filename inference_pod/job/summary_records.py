"""The job's records: the job summary (`summary.json`), the results index (`index.json`, listing one JSONL part per
shard of `IndexEntry` lines) and the per-shard failed lists (JSONL of `ErrorEntry` lines), merged from the plan, the
shard summaries and the manifests (`summary`). Never imports paddle, kubernetes or inference_pod.shard.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any, ClassVar

from inference_pod.job import layout
from inference_pod.job.records import INDEX_SCHEMA, JOB_SUMMARY_SCHEMA, Fields
from inference_pod.job.shard_records import ErrorEntry, ItemCounts, Throughput

JOB_STATUSES = ("succeeded", "failed", "incomplete")
# Failed documents summary.json holds (the first by key); every one is in the shards' failed/ files. Keeps the summary
# a small object whatever the job's size, and still lists every failure of a job with a few.
FAILED_ITEMS_IN_SUMMARY = 1000


@dataclass(frozen=True, slots=True)
class JobShard:
    """One shard in the job summary: `status` is its summary's, else `pending` (documents without a result) or
    `no_summary` (every document has one, the summary is missing); `ok`, `failed` and `pending` count what storage
    holds of its documents."""

    NAME: ClassVar[str] = "job summary shard"
    SCHEMA: ClassVar[str | None] = None

    index: int
    items: int
    status: str
    devices: tuple[dict[str, Any], ...] = ()
    seconds: float | None = None
    throughput: Throughput | None = None
    attempt: str | None = None
    ok: int = 0
    failed: int = 0
    pending: int = 0

    @classmethod
    def from_dict(cls, doc: Any) -> JobShard:
        f = Fields(cls.NAME, doc)
        return cls(f.integer("index"), f.integer("items"), f.text("status"), f.objects("devices", ()),
                   f.number("seconds", None, nullable=True),
                   f.nested("throughput", Throughput.from_dict, None, nullable=True),
                   f.text("attempt", None, nullable=True), f.integer("ok", 0), f.integer("failed", 0),
                   f.integer("pending", 0))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "items": self.items, "status": self.status, "devices": list(self.devices),
                "seconds": self.seconds, "throughput": self.throughput.to_dict() if self.throughput else None,
                "attempt": self.attempt, "ok": self.ok, "failed": self.failed, "pending": self.pending}


@dataclass(frozen=True, slots=True)
class JobSummary:
    """The whole job: counts (of what storage holds: `summary_merge` says how they split), error codes, the first
    FAILED_ITEMS_IN_SUMMARY documents with an error record by key (`failed_items`; `failed_items_total` counts them
    all, `failed_items_truncated` says some are left out: every one is in `layout.failed_items_key` of each shard
    whose entry counts `failed` > 0, what `ocrjob results` and `ocrjob retry` read) and each shard. `extra` holds
    what the writer added (the operator: its verdict, the Kubernetes object, the attempts), kept key by key."""

    NAME: ClassVar[str] = "job summary"
    SCHEMA: ClassVar[str | None] = JOB_SUMMARY_SCHEMA
    FIELDS: ClassVar[tuple[str, ...]] = ("schema", "job_id", "input", "output", "status", "created", "items",
                                         "skipped_at_planning", "error_codes", "failed_items", "failed_items_total",
                                         "failed_items_truncated", "shards")

    job_id: str
    input: str
    output: str
    status: str
    created: str
    items: ItemCounts
    skipped_at_planning: dict[str, Any] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    failed_items: tuple[ErrorEntry, ...] = ()
    shards: tuple[JobShard, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    failed_items_total: int | None = None  # None: as many as `failed_items` holds

    def __post_init__(self) -> None:
        if self.failed_items_total is None:
            object.__setattr__(self, "failed_items_total", len(self.failed_items))

    @property
    def failed_items_truncated(self) -> bool:
        return (self.failed_items_total or 0) > len(self.failed_items)

    @classmethod
    def from_dict(cls, doc: Any) -> JobSummary:
        f = Fields(cls.NAME, doc)
        return cls(f.text("job_id"), f.text("input"), f.text("output"), f.text("status"), f.text("created"),
                   f.nested("items", ItemCounts.from_dict), f.mapping("skipped_at_planning", {}),
                   f.tallies("error_codes", {}), f.each("failed_items", ErrorEntry.from_dict, ()),
                   f.each("shards", JobShard.from_dict, ()),
                   {k: v for k, v in doc.items() if k not in cls.FIELDS}, f.integer("failed_items_total", None))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": JOB_SUMMARY_SCHEMA, "job_id": self.job_id, "input": self.input, "output": self.output,
            "status": self.status, "created": self.created, "items": self.items.to_dict(),
            "skipped_at_planning": self.skipped_at_planning, "error_codes": self.error_codes,
            "failed_items": [entry.to_dict() for entry in self.failed_items],
            "failed_items_total": self.failed_items_total, "failed_items_truncated": self.failed_items_truncated,
            "shards": [shard.to_dict() for shard in self.shards], **self.extra,
        }


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One line of a shard's index part (`layout.index_part_key`): a planned document and its result object."""

    NAME: ClassVar[str] = "index entry"
    SCHEMA: ClassVar[str | None] = None

    source: str  # the input key
    result: str  # its result object's key
    shard: int

    @classmethod
    def from_dict(cls, doc: Any) -> IndexEntry:
        f = Fields(cls.NAME, doc)
        return cls(f.text("source"), f.text("result"), f.integer("shard"))

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "result": self.result, "shard": self.shard}


def index_part(keys: Iterable[str], shard: int) -> bytes:
    """Shard `shard`'s index part: byte for byte `records.encode_lines` of each key's `IndexEntry`, without building
    an entry or a dict per key (a job writes millions; this is about 4x faster)."""
    tail = f',"shard":{shard}}}\n'
    return "".join(f'{{"source":{encode_basestring(key)},"result":{encode_basestring(layout.result_key(key))}{tail}'
                   for key in keys).encode()


@dataclass(frozen=True, slots=True)
class UnreadableManifest:
    NAME: ClassVar[str] = "unreadable manifest"
    SCHEMA: ClassVar[str | None] = None

    shard: int
    manifest: str
    error: str

    @classmethod
    def from_dict(cls, doc: Any) -> UnreadableManifest:
        f = Fields(cls.NAME, doc)
        return cls(f.integer("shard"), f.text("manifest"), f.text("error", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "manifest": self.manifest, "error": self.error}


@dataclass(frozen=True, slots=True)
class IndexPart:
    """One shard's part of the results index: where its JSONL lies and how many documents (lines) it holds."""

    NAME: ClassVar[str] = "index part"
    SCHEMA: ClassVar[str | None] = None

    shard: int
    key: str
    entries: int

    @classmethod
    def from_dict(cls, doc: Any) -> IndexPart:
        f = Fields(cls.NAME, doc)
        return cls(f.integer("shard"), f.text("key"), f.integer("entries"))

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "key": self.key, "entries": self.entries}


@dataclass(frozen=True, slots=True)
class ResultsIndex:
    """Every planned input with its result key, in one JSONL part per shard (`parts`, by shard; `entries` counts
    their lines); a manifest that could not be read is named, not fatal, and has no part."""

    NAME: ClassVar[str] = "results index"
    SCHEMA: ClassVar[str | None] = INDEX_SCHEMA

    job_id: str
    output: str
    parts: tuple[IndexPart, ...]
    unreadable_manifests: tuple[UnreadableManifest, ...] = ()

    @property
    def entries(self) -> int:
        return sum(part.entries for part in self.parts)

    @classmethod
    def from_dict(cls, doc: Any) -> ResultsIndex:
        f = Fields(cls.NAME, doc)
        return cls(f.text("job_id"), f.text("output"), f.each("parts", IndexPart.from_dict),
                   f.each("unreadable_manifests", UnreadableManifest.from_dict, ()))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": INDEX_SCHEMA, "job_id": self.job_id, "output": self.output, "entries": self.entries,
                "parts": [part.to_dict() for part in self.parts],
                "unreadable_manifests": [entry.to_dict() for entry in self.unreadable_manifests]}
