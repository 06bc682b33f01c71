"""The records in storage, by schema name, and the one way to encode and read them.

Every record OcrJob writes carries a `schema` (below); `encode` is how records are written and `read_record`
the one reader (it returns None for a missing object, and for an object that is not a JSON mapping of that
schema: a half-written or foreign object is treated as absent, never as a crash). `read` is its typed variant:
the record type's `from_dict` validates the fields and a record that fails it is treated as absent too.
`load_record` and `load` are their strict forms, for a caller that must say why a record is unusable
(ObjectNotFound, RecordError); the others are built on `load_record`.

The typed records themselves live next to their subject (`plan_records`, `shard_records`, `result_record`,
`summary_records`): frozen dataclasses whose `to_dict()` is exactly the JSON stored and whose `from_dict()`
raises `RecordError` naming the record and the field. Records that cross a process boundary (pickled for a
`spawn`ed worker) are not slotted: Python 3.10 cannot unpickle frozen slotted dataclasses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

from inference_pod.job.errors import ObjectNotFound, ObjectTooLarge

RESULT_SCHEMA = "ocrjob.result/v1"
PROGRESS_SCHEMA = "ocrjob.progress/v1"
SHARD_SUMMARY_SCHEMA = "ocrjob.shard-summary/v1"
PLAN_SCHEMA = "ocrjob.plan/v1"
MANIFEST_SCHEMA = "ocrjob.shard/v1"
# v2: `failed_items` holds at most FAILED_ITEMS_IN_SUMMARY documents (the rest in layout.failed_items_key files), and
# index.json lists per-shard JSONL parts instead of every result. v1 (every failed document, every result in one
# object) is no longer written; the CLI still reads it for jobs summarised before.
JOB_SUMMARY_SCHEMA = "ocrjob.job-summary/v2"
JOB_SUMMARY_V1_SCHEMA = "ocrjob.job-summary/v1"
INDEX_SCHEMA = "ocrjob.index/v2"
INDEX_V1_SCHEMA = "ocrjob.index/v1"


class RecordError(ValueError):
    """A stored record is not what its schema says: `record` names the record type, `field` the field (dotted,
    with list indexes, e.g. `shards[2].index`; empty for the record as a whole)."""

    def __init__(self, record: str, field: str, problem: str) -> None:
        self.record, self.field, self.problem = record, field, problem
        super().__init__(f"{record} record: {f'field {field!r} ' if field else ''}{problem}")


# The most bytes of one record a reader holds: far more than any record OcrJob writes (a plan of 100,000 shards is
# about 15 MiB), far less than the operator's memory. A record may declare its own bound (`MAX_BYTES`).
MAX_RECORD_BYTES = 64 << 20


class Record(Protocol):
    SCHEMA: ClassVar[str | None]  # None: the record is part of another one and has no schema of its own
    NAME: ClassVar[str]

    @classmethod
    def from_dict(cls, doc: Any) -> Any: ...

    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)
_REQUIRED: Any = object()


class Fields:
    """Typed, validated access to the fields of one record's JSON object; each problem is a RecordError."""

    __slots__ = ("doc", "record")

    def __init__(self, record: str, doc: Any) -> None:
        if not isinstance(doc, Mapping):
            raise RecordError(record, "", f"expected a JSON object, got {type(doc).__name__}")
        self.record, self.doc = record, doc

    def _get(self, name: str, types: tuple[type, ...], what: str, default: Any, nullable: bool) -> Any:
        if name not in self.doc:
            if default is _REQUIRED:
                raise RecordError(self.record, name, "is missing")
            return default
        value = self.doc[name]
        if value is None and nullable:
            return None
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise RecordError(self.record, name, f"must be {what}, got {type(value).__name__}")
        return value

    def text(self, name: str, default: Any = _REQUIRED, nullable: bool = False) -> Any:
        return self._get(name, (str,), "a string", default, nullable)

    def integer(self, name: str, default: Any = _REQUIRED, nullable: bool = False) -> Any:
        return self._get(name, (int,), "an integer", default, nullable)

    def number(self, name: str, default: Any = _REQUIRED, nullable: bool = False) -> Any:
        return self._get(name, (int, float), "a number", default, nullable)

    def flag(self, name: str, default: Any = _REQUIRED) -> Any:
        return self._get(name, (bool,), "true or false", default, False)

    def mapping(self, name: str, default: Any = _REQUIRED, nullable: bool = False) -> Any:
        value = self._get(name, (dict,), "an object", default, nullable)
        return dict(value) if isinstance(value, dict) else value

    def sequence(self, name: str, default: Any = _REQUIRED) -> tuple[Any, ...]:
        return tuple(self._get(name, (list, tuple), "a list", default, False))

    def objects(self, name: str, default: Any = _REQUIRED) -> tuple[dict[str, Any], ...]:
        """A list of JSON objects kept as they are (e.g. device reports)."""
        values = self.sequence(name, default)
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise RecordError(self.record, f"{name}[{i}]", f"must be an object, got {type(value).__name__}")
        return values

    def tallies(self, name: str, default: Any = _REQUIRED) -> dict[str, int]:
        """An object of integer counts by name (e.g. error codes)."""
        values = self.mapping(name, default)
        for key, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise RecordError(self.record, f"{name}.{key}", f"must be an integer, got {type(value).__name__}")
        return values

    def choice(self, name: str, allowed: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        value = self.text(name, default)
        if name in self.doc and value not in allowed:
            raise RecordError(self.record, name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def nested(self, name: str, parse: Callable[[Any], Any], default: Any = _REQUIRED,
               nullable: bool = False) -> Any:
        """A field holding another record (parsed by `parse`); its errors name the path from this record."""
        if name not in self.doc:
            return self._get(name, (object,), "", default, nullable)
        if self.doc[name] is None and nullable:
            return None
        return self._within(name, parse, self.doc[name])

    def each(self, name: str, parse: Callable[[Any], Any], default: Any = _REQUIRED) -> tuple[Any, ...]:
        """A list of records, each parsed by `parse`."""
        return tuple(self._within(f"{name}[{i}]", parse, value) for i, value in enumerate(self.sequence(name, default)))

    def _within(self, path: str, parse: Callable[[Any], Any], value: Any) -> Any:
        try:
            return parse(value)
        except RecordError as exc:
            raise RecordError(self.record, f"{path}.{exc.field}" if exc.field else path, exc.problem) from exc


def utc_iso(epoch: float | None = None) -> str:
    """RFC 3339 UTC with second precision, the one timestamp format of every record and status."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def encode(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_lines(docs: Iterable[Mapping[str, Any]]) -> bytes:
    """JSON lines: one `encode`d record a line (the per-shard parts of the index and of the failed documents)."""
    return b"".join(encode(doc) + b"\n" for doc in docs)


def decode_lines(data: bytes, record_type: type[R], where: str = "") -> Iterator[R]:
    """The typed records of JSON lines (blank lines skipped); RecordError names the line (and `where`, the object)
    of the first that is not one."""
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise RecordError(record_type.NAME, "", f"{where} line {number} is not valid JSON ({exc})") from exc
        try:
            yield record_type.from_dict(doc)
        except RecordError as exc:
            raise RecordError(exc.record, exc.field, f"{exc.problem} ({where} line {number})") from exc


def _is_record(doc: Any, schema: str | None) -> bool:
    return isinstance(doc, dict) and (schema is None or doc.get("schema", schema) == schema)


def decode(data: bytes, schema: str | None = None) -> dict[str, Any] | None:
    """A record from bytes; None when the bytes are not a JSON object (of `schema`, when given). A record
    without a `schema` field is accepted as being of `schema`."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if _is_record(doc, schema) else None


def load_record(storage: Any, key: str, schema: str | None = None, name: str = "record",
                max_bytes: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """The record at `key` of `storage` as its JSON object: ObjectNotFound when it is missing, RecordError when
    it is not a JSON object (of `schema`, when given) or has more than `max_bytes` (it is not read then); other
    storage errors propagate (typed, `inference_pod.job.errors`). Every read of a record goes through here;
    `name` names it in the error."""
    try:
        doc = json.loads(storage.get(key, max_bytes))
    except ObjectTooLarge as exc:
        raise RecordError(name, "", str(exc)) from exc
    except ValueError as exc:
        raise RecordError(name, "", f"{key} is not valid JSON ({exc})") from exc
    if not _is_record(doc, schema):
        raise RecordError(name, "", f"{key} is not a JSON object{f' of schema {schema}' if schema else ''}")
    return doc


def read_record(storage: Any, key: str, schema: str | None = None) -> dict[str, Any] | None:
    """The record at `key` of `storage`, or None when it is missing or unreadable as a record. Storage errors
    other than "not found" propagate (typed, `inference_pod.job.errors`)."""
    try:
        return load_record(storage, key, schema)
    except (ObjectNotFound, RecordError):
        return None


def load(storage: Any, key: str, record_type: type[R]) -> R:
    """The typed record at `key`: ObjectNotFound when it is missing, RecordError when it is not that record;
    other storage errors propagate."""
    return record_type.from_dict(load_record(storage, key, record_type.SCHEMA, record_type.NAME,
                                             getattr(record_type, "MAX_BYTES", MAX_RECORD_BYTES)))


def read(storage: Any, key: str, record_type: type[R]) -> R | None:
    """The typed record at `key`, or None when it is missing or not that record (a half-written or foreign
    object is treated as absent). Storage errors other than "not found" propagate."""
    try:
        return load(storage, key, record_type)
    except (ObjectNotFound, RecordError):
        return None
