"""Balancing a table's rows over shards by bytes: longest-processing-time-first greedy (LPT).

Rows go in order of size, largest first, ties by key, each to the lightest shard (ties by fewer items, then lower
index): the same assignment the planner made when it held `Item` objects, so the same listing keeps its plan, and
the spread between shards is at most the largest item. Deterministic: it reads only sizes and the key order.
Memory: two 4-byte columns over the rows, plus one sort run (`plan_table.SORT_RUN` rows) at a time.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inference_pod.job import plan_table
from inference_pod.job.plan_table import ItemTable


@dataclass(frozen=True)
class Assignment:
    """Rows grouped by shard: shard `s` holds `rows[starts[s]:starts[s + 1]]`, in key order, `totals[s]` bytes.
    No shard is empty."""

    rows: array
    starts: array
    totals: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.totals)

    def shard_rows(self, shard: int) -> array:
        return self.rows[self.starts[shard]:self.starts[shard + 1]]

    def item_count(self, shard: int) -> int:
        return self.starts[shard + 1] - self.starts[shard]


def balance(table: ItemTable, order: Sequence[int], count: int) -> Assignment:
    """Assign `table`'s rows (`order`: the rows in key order) to `count` shards by LPT; 1 <= count <= len(table)."""
    shard_of = array("I", bytes(4 * len(table)))
    heap = [(0, 0, shard) for shard in range(count)]
    sizes = table.sizes
    for row in _largest_first(sizes, order):
        total, items, shard = heap[0]
        shard_of[row] = shard
        heapq.heapreplace(heap, (total + sizes[row], items + 1, shard))
    totals, counts = [0] * count, [0] * count
    for total, items, shard in heap:
        totals[shard], counts[shard] = total, items
    return Assignment(_group(shard_of, order, counts), _starts(counts), tuple(totals))


def _largest_first(sizes: array, order: Sequence[int]) -> Iterable[int]:
    """The rows by size, largest first, equal sizes in key order. Sorted in runs of SORT_RUN rows of the key order
    (stable: equal sizes keep key order), then merged (ties from the earlier run first, so key order again)."""
    run = plan_table.SORT_RUN
    runs = [array("I", sorted(order[low:low + run], key=sizes.__getitem__, reverse=True))
            for low in range(0, len(order), run)]
    return runs[0] if len(runs) == 1 else heapq.merge(*runs, key=sizes.__getitem__, reverse=True)


def _starts(counts: list[int]) -> array:
    starts, position = array("Q", [0]), 0
    for items in counts:
        position += items
        starts.append(position)
    return starts


def _group(shard_of: array, order: Sequence[int], counts: list[int]) -> array:
    """A counting sort of the rows by shard; walking `order` keeps each shard's rows in key order."""
    rows = array("I", bytes(4 * len(shard_of)))
    position = list(_starts(counts))
    for row in order:
        shard = shard_of[row]
        rows[position[shard]] = row
        position[shard] += 1
    return rows
