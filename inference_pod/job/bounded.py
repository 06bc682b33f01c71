"""Calls on a bounded thread pool, results in order, at most twice as many in flight as threads: the one pattern the
planner (manifests) and the job summary (per-shard files) use to write many objects without holding them all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def map_bounded(call: Callable[..., T], calls: Iterable[tuple[Any, ...]], workers: int,
                name: str = "ocrjob") -> Iterator[T]:
    """`call(*args)` for each args on `workers` threads, yielded in submission order. At most 2 x `workers` are
    submitted and not yet yielded, and `calls` is consumed only as they finish, so a lazy one holds that many at
    once. The first failure (in submission order) stops the submissions and is raised once the calls in flight are
    done; closing the iterator early cancels what has not started."""
    pending: deque[Future[T]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        try:
            for args in calls:
                pending.append(pool.submit(call, *args))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def run_bounded(call: Callable[..., object], calls: Iterable[tuple[Any, ...]], workers: int,
                name: str = "ocrjob") -> None:
    """`map_bounded` for calls whose results are not needed."""
    for _ in map_bounded(call, calls, workers, name):
        pass
