"""What a worker process tells its coordinator, and what a coordinator tells the local runner's progress bar.

Plain frozen dataclasses sent over `multiprocessing` queues of the `spawn` context (so picklable, and not
slotted: Python 3.10 cannot unpickle frozen slotted dataclasses). The receiver dispatches on the type, never
on a string. Never imports Paddle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Outcome(str, Enum):
    """What became of one item: `skipped` items already had a result from an earlier attempt or run."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ItemDone:
    """One item is finished: its result is written (`ok`, `failed`), or an earlier one exists (`skipped`;
    `previous_failed` when that one is an error record, whose `code` and `message` are kept). `no_text_pages`:
    the result's pages flagged `no_text_found`, the earlier result's too when skipped (the shard summary counts
    what storage holds)."""

    worker: int
    key: str
    outcome: Outcome
    pages: int = 0
    code: str | None = None
    message: str | None = None
    previous_failed: bool = False
    no_text_pages: int = 0

    @property
    def is_error(self) -> bool:
        """The item has an error record (written now, or by an earlier attempt)."""
        return self.outcome is Outcome.FAILED or (self.outcome is Outcome.SKIPPED and self.previous_failed)


@dataclass(frozen=True)
class Ready:
    """A worker's predictor is loaded, on the device it verified."""

    worker: int
    device: dict[str, Any]
    models: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fatal:
    """A worker hit a systemic failure: the shard ends with this exit code."""

    worker: int
    exit_code: int
    message: str


@dataclass(frozen=True)
class Exited:
    """A worker process is about to exit (its last message)."""

    worker: int


WorkerMessage = ItemDone | Ready | Fatal | Exited


@dataclass(frozen=True)
class ShardProgress:
    """Coordinator → local runner: one item of `shard` is done."""

    shard: int
    item: ItemDone
