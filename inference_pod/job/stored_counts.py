"""Each planned shard's item counts as they are in storage: which planned documents have an ok result, which an
error record, which none yet (pending). The job summary is built from these, so a lost shard summary or a retry
cannot make it disagree with the result objects. Never imports paddle, kubernetes or inference_pod.shard.

Cost, for a job of N documents: the output prefix is listed once (streamed, N/1000 requests) into `PresentResults`
(8 bytes a stored result, no key kept), and a result object is read (one GET) only where no shard summary already
says what it is. Shards are then counted one at a time (`count_shard`), each from its own manifest's keys.

A shard summary covers its shard when the shard succeeded and its error list is complete: every result of that
shard not in the list is ok. Results of shards without such a summary (a shard that failed, or could not write its
summary) are read one by one, as the loader itself reads them to resume: an object that is not a result record
counts as missing.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections import Counter
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass

from inference_pod.job import layout, records
from inference_pod.job.result_record import ResultRecord
from inference_pod.job.shard_records import ErrorEntry, ShardSummary
from inference_pod.job.storage import ObjectInfo, Storage

ResultReader = Callable[[str], ResultRecord | None]  # result key → the record, None when missing or not one
# Hashes sorted at once: the sort's temporaries are Python ints (about 40 bytes a hash), so a run of 128 Ki costs ~5 MiB
# where one of a million costs 40 (BENCHMARKS.md); merging the runs costs no more than the bigger sort.
HASH_SORT_RUN = 1 << 17


@dataclass(frozen=True)
class StoredShard:
    """What storage holds for one shard's documents. `errors` are the error records (the shard summary's entries
    where it lists them, read from the object otherwise: then not known to be `earlier`); `no_text_pages` the
    ok results' pages flagged `no_text_found` (the covering summary's count, else summed from the results read);
    `read` counts the GETs it took."""

    index: int
    items: int
    ok: int
    failed: int
    errors: tuple[ErrorEntry, ...] = ()
    read: int = 0
    no_text_pages: int = 0

    @property
    def present(self) -> int:
        return self.ok + self.failed

    @property
    def pending(self) -> int:
        return self.items - self.present


def covers(summary: ShardSummary | None) -> bool:
    """True when the summary alone classifies every result of its shard: the shard succeeded (every item was
    processed or found done) and its error list holds every error it counted."""
    return (summary is not None and summary.status == "succeeded" and summary.items is not None
            and len(summary.errors) == sum(summary.error_codes.values()))


class PresentResults:
    """The result keys of an output listing (keys ending in RESULT_SUFFIX outside JOB_DIR), as a sorted column of
    their 64-bit `hash()`es: 8 bytes a key and no object per key, where a set of the keys costs about 120.

    A key is reported present when its hash is: a missing result whose hash equals a stored one's (about N / 2**64
    for N stored results: 5e-14 at a million) would count as present. The hash is Python's keyed SipHash, keyed at
    random per process, so no one can choose keys that collide. The hashes are only comparable within the process
    that made them, which is the only place this lives."""

    __slots__ = ("_hashes",)

    def __init__(self, hashes: array) -> None:
        self._hashes = hashes  # sorted

    @classmethod
    def of(cls, listing: Iterable[ObjectInfo]) -> PresentResults:
        """Stream `listing` (never kept); sorted in runs of HASH_SORT_RUN hashes, then merged, so the sort's
        temporaries stay bounded."""
        own, runs, run = layout.JOB_DIR + "/", [], array("q")
        for info in listing:
            key = info.key
            if key.endswith(layout.RESULT_SUFFIX) and not key.startswith(own):
                run.append(hash(key))
                if len(run) >= HASH_SORT_RUN:
                    runs.append(array("q", sorted(run)))
                    run = array("q")
        runs.append(array("q", sorted(run)))
        return cls(runs[0] if len(runs) == 1 else array("q", heapq.merge(*runs)))

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, key: object) -> bool:
        wanted = hash(key)
        at = bisect.bisect_left(self._hashes, wanted)
        return at < len(self._hashes) and self._hashes[at] == wanted


def count_shard(index: int, keys: Iterable[str], present: Container[str], summary: ShardSummary | None,
                read: ResultReader) -> StoredShard:
    """Pure but for `read`: classify one shard's planned documents (`keys`, input keys) given the result keys
    found in storage (`present`: a set, or `PresentResults`) and the shard's summary, reading only results the
    summary does not cover."""
    known = {entry.key: entry for entry in (summary.errors if summary else ())}
    complete = covers(summary)
    # A covering summary counted every ok result of its shard, skipped ones included; otherwise each is read.
    no_text = summary.items.no_text_pages if complete and summary and summary.items else 0
    items = ok = reads = 0
    errors: list[ErrorEntry] = []
    for key in keys:
        items += 1
        result_key = layout.result_key(key)
        if result_key not in present:
            continue
        if key in known:
            errors.append(known[key])
        elif complete:
            ok += 1
        else:
            reads += 1
            record = read(result_key)
            if record is None:
                continue  # not a result of ours: the loader processes it again, so it is pending
            if record.failed and record.error is not None:
                errors.append(ErrorEntry(key, record.error.code, record.error.message))
            else:
                ok += 1
                no_text += record.no_text_pages
    return StoredShard(index, items, ok, len(errors), tuple(errors), reads, no_text)


def result_reader(dest: Storage) -> ResultReader:
    def read(result_key: str) -> ResultRecord | None:
        return records.read(dest, result_key, ResultRecord)

    return read


def count_stored(dest: Storage, shards: dict[int, tuple[str, ...]],
                 summaries: dict[int, ShardSummary | None]) -> dict[int, StoredShard]:
    """Every shard's stored counts at once: `shards` maps each planned shard to its documents' input keys (from its
    manifest). One listing of the output location, then a GET per result no summary covers. The job summary does
    the same one shard at a time (`summary.write_job_summary`)."""
    present, read = PresentResults.of(dest.list("")), result_reader(dest)
    return {index: count_shard(index, keys, present, summaries.get(index), read) for index, keys in shards.items()}


def error_codes(shard: StoredShard) -> Counter:
    return Counter(entry.code for entry in shard.errors)
