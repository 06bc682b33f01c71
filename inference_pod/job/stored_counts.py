"""Each planned shard's item counts as they are in storage: which planned documents have an ok result, which an
error record, which none yet (pending). The job summary is built from these, so a lost shard summary or a retry
cannot make it disagree with the result objects. Never imports paddle, kubernetes or inference_pod.shard.

Cost, for a job of N documents: the output prefix is listed once (streamed, N/1000 requests), and a result object
is read (one GET) only where no shard summary already says what it is. A shard summary covers its shard when the
shard succeeded and its error list is complete: every result of that shard not in the list is ok. Results of
shards without such a summary (a shard that failed, or could not write its summary) are read one by one, as the
loader itself reads them to resume: an object that is not a result record counts as missing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from inference_pod.job import layout, records
from inference_pod.job.result_record import ResultRecord
from inference_pod.job.shard_records import ErrorEntry, ShardSummary
from inference_pod.job.storage import ObjectInfo, Storage

ResultReader = Callable[[str], ResultRecord | None]  # result key → the record, None when missing or not one


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


def count_shard(index: int, keys: Iterable[str], present: set[str], summary: ShardSummary | None,
                read: ResultReader) -> StoredShard:
    """Pure but for `read`: classify one shard's planned documents (`keys`, input keys) given the result keys
    found in storage (`present`) and the shard's summary, reading only results the summary does not cover."""
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


def planned_present(listing: Iterable[ObjectInfo], wanted: set[str]) -> set[str]:
    """The keys of `wanted` that the (streamed) listing holds; the listing itself is never kept."""
    return {info.key for info in listing if info.key in wanted}


def count_stored(dest: Storage, shards: dict[int, tuple[str, ...]],
                 summaries: dict[int, ShardSummary | None]) -> dict[int, StoredShard]:
    """Every shard's stored counts: `shards` maps each planned shard to its documents' input keys (from its
    manifest). One listing of the output location, then a GET per result no summary covers."""
    wanted = {layout.result_key(key) for keys in shards.values() for key in keys}
    present = planned_present(dest.list(""), wanted)
    del wanted

    def read(result_key: str) -> ResultRecord | None:
        return records.read(dest, result_key, ResultRecord)

    return {index: count_shard(index, keys, present, summaries.get(index), read) for index, keys in shards.items()}


def error_codes(shard: StoredShard) -> Counter:
    return Counter(entry.code for entry in shard.errors)
