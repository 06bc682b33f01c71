"""The planner's listing, held compactly: one row per supported document in parallel columns, no object per key.

A listing of ten million keys as `Item` objects (or `PurePosixPath`s) costs gigabytes; as rows it costs its bytes.
Invariants of `ItemTable`:
- a row holds its key (UTF-8), its ETag (16 raw bytes for a lower-case hex MD5 ETag, the text otherwise) and one
  length byte in one shared buffer, plus an 8-byte end offset and an 8-byte size: `ROW_OVERHEAD` bytes besides the
  key and the ETag text, and no Python object;
- the bytes it holds pass its limit by at most `CHECK_EVERY` rows: then `append` raises PlanTooLarge, before the
  planner's memory grows further;
- `in_key_order` is True exactly when each key was greater than the one before, as S3 lists them: then the keys are
  distinct and a row's index is its rank in key order, so no sort by key is needed.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from inference_pod.job import layout
from inference_pod.job.errors import PlanError, PlanTooLarge
from inference_pod.job.plan_records import MAX_TABLE_BYTES, Item
from inference_pod.job.storage import ObjectInfo

SUPPORTED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pdf"})
_COLUMN_BYTES = 16  # a row's end offset and size, 8 bytes each
ROW_OVERHEAD = _COLUMN_BYTES + 1  # and the ETag's length byte
CHECK_EVERY = 1024  # rows between two checks of the limit
SORT_RUN = 1 << 20  # rows sorted at once: bounds a sort's temporary objects (about 80 bytes a row)
EXAMPLES_KEPT = 20
_MD5_HEX = 32
_RAW_MD5 = 255  # the length byte of an MD5 ETag stored as 16 raw bytes
_MAX_ETAG_TEXT = 254


def is_supported(key: str) -> bool:
    """The key's file name has a supported suffix (case-insensitive), as `PurePosixPath(key).suffix` finds it: the
    text from the name's last dot, not a dot-file's leading dot."""
    name = key[key.rfind("/") + 1:]
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in SUPPORTED_SUFFIXES


class ItemTable:
    """Rows of (key, size, etag) in listing order; see the module docstring for what a row costs."""

    __slots__ = ("_ends", "_last", "_records", "in_key_order", "limit", "sizes")

    def __init__(self, limit: int | None = None) -> None:
        self._records = bytearray()
        self._ends = array("Q")
        self.sizes = array("q")
        self.in_key_order = True
        self._last = ""
        self.limit = MAX_TABLE_BYTES if limit is None else limit

    def append(self, key: str, size: int, etag: str) -> None:
        self._records += key.encode() + _compact_etag(etag)
        self._ends.append(len(self._records))
        self.sizes.append(size)
        if key <= self._last:
            self.in_key_order = False
        self._last = key
        if not len(self._ends) % CHECK_EVERY and self.nbytes > self.limit:  # not per row: it is the hot loop
            raise PlanTooLarge(
                f"the input holds more than {len(self)} documents ({self.nbytes >> 20} MiB of keys and ETags): more "
                f"than one planner may hold ({self.limit >> 20} MiB); split it into several jobs (by prefix, or with "
                "input manifests of fewer keys)")

    @classmethod
    def of(cls, items: Iterable[Item]) -> ItemTable:
        table = cls()
        for item in items:
            table.append(item.key, item.size, item.etag)
        return table

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def nbytes(self) -> int:
        """The bytes the rows hold (the columns' contents, not their spare capacity)."""
        return len(self._records) + len(self._ends) * _COLUMN_BYTES

    def total_bytes(self) -> int:
        return sum(self.sizes)

    def _record(self, row: int) -> bytearray:
        return self._records[self._ends[row - 1] if row else 0:self._ends[row]]  # a copy: the table may grow

    def key_bytes(self, row: int) -> bytearray:
        record = self._record(row)
        return record[:-1 - _etag_length(record[-1])]

    def entry(self, row: int) -> tuple[str, int, str]:
        """(key, size, etag) of `row`."""
        record = self._record(row)
        tag = record[-1]
        stored = _etag_length(tag)
        etag = record[-1 - stored:-1]
        return (record[:-1 - stored].decode(), self.sizes[row],
                etag.hex() if tag == _RAW_MD5 else etag.decode())

    def item(self, row: int) -> Item:
        return Item(*self.entry(row))

    def __iter__(self) -> Iterator[Item]:
        return (self.item(row) for row in range(len(self)))

    def key_order(self) -> Sequence[int]:
        """The rows in key order. A key listed twice raises PlanError. A listing in key order (as S3 lists) is its own
        order; another is sorted in runs of SORT_RUN rows, then merged, so the sort's temporaries stay bounded."""
        if self.in_key_order:
            return range(len(self))
        runs = [array("I", sorted(range(low, min(low + SORT_RUN, len(self))), key=self.key_bytes))
                for low in range(0, len(self), SORT_RUN)]
        order, previous = array("I"), None
        for row in heapq.merge(*runs, key=self.key_bytes):
            key = self.key_bytes(row)
            if key == previous:
                raise PlanError(f"the listing holds the same key twice ({key.decode()!r}); de-duplicate the input "
                                "manifest")
            order.append(row)
            previous = key
        return order


def _compact_etag(etag: str) -> bytes:
    """The ETag as stored, followed by its length byte (`_RAW_MD5` for a hex MD5 stored as 16 raw bytes)."""
    if len(etag) == _MD5_HEX:
        try:
            raw = bytes.fromhex(etag)
        except ValueError:
            raw = b""
        if raw.hex() == etag:  # lower-case hex digits only: `hex()` gives back the very text
            return raw + b"\xff"
    text = etag.encode()
    if len(text) > _MAX_ETAG_TEXT:
        raise PlanError(f"an object's ETag is {len(text)} bytes long (more than {_MAX_ETAG_TEXT}): this is not an S3 "
                        "ETag; check the storage endpoint")
    return text + bytes((len(text),))


def _etag_length(tag: int) -> int:
    return 16 if tag == _RAW_MD5 else tag


@dataclass
class Listing:
    """The supported items of a listing plus what was left out and why (nothing is dropped silently). The examples
    are the first EXAMPLES_KEPT unsupported keys in key order, so they too do not depend on the listing order."""

    table: ItemTable = field(default_factory=ItemTable)
    unsupported_count: int = 0
    unsupported_examples: list[str] = field(default_factory=list)

    def skipped(self) -> dict:
        return {
            "unsupported": {"count": self.unsupported_count, "examples": self.unsupported_examples},
        }


def collect(objects: Iterable[ObjectInfo], limit: int | None = None) -> Listing:
    """Stream a listing into the supported items, skipping OcrJob's own bookkeeping and results."""
    listing = Listing(ItemTable(limit))
    append, own = listing.table.append, layout.JOB_DIR + "/"
    for obj in objects:
        key = obj.key
        if key.startswith(own):
            continue
        if not is_supported(key):
            listing.unsupported_count += 1
            examples = listing.unsupported_examples
            if len(examples) < EXAMPLES_KEPT or key < examples[-1]:
                bisect.insort(examples, key)
                del examples[EXAMPLES_KEPT:]
            continue
        append(key, obj.size, obj.etag)
    return listing
