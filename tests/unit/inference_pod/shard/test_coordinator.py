"""The coordinator's supervision loop dispatches on the type of each worker message (no worker processes here:
the queues are plain ones and the "processes" stand-ins)."""

from __future__ import annotations

import queue
from pathlib import Path

from inference_pod.job import exit_codes
from inference_pod.job.plan_records import Item, Manifest
from inference_pod.models import ModelSource, ModelSpec
from inference_pod.shard.config import LoaderConfig
from inference_pod.shard.coordinator import Coordinator
from inference_pod.shard.messages import Exited, Fatal, ItemDone, Outcome, Ready, ShardProgress


class Alive:
    exitcode = None

    def is_alive(self) -> bool:
        return True


def coordinator(tmp_path: Path, keys: list[str]) -> tuple[Coordinator, queue.Queue]:
    manifest = Manifest("job", 4, str(tmp_path / "in"), str(tmp_path / "out"), tuple(Item(k, 1) for k in keys))
    config = LoaderConfig(manifest="unused", models=ModelSource("d", "dd", "r", "rd"), termination_log=None)
    progress: queue.Queue = queue.Queue()
    return Coordinator(config, manifest, ModelSpec("d", Path("dd"), "r", Path("rd")), progress), progress


def test_items_ready_and_exit_messages_drive_the_tally(tmp_path: Path) -> None:
    coord, progress = coordinator(tmp_path, ["a.png", "b.png", "c.png"])
    out_q: queue.Queue = queue.Queue()
    for message in (Ready(0, {"kind": "cpu"}, {"det": "d"}), ItemDone(0, "a.png", Outcome.OK, pages=2),
                    ItemDone(0, "b.png", Outcome.FAILED, code="corrupt", message="bad"),
                    ItemDone(0, "c.png", Outcome.SKIPPED, code="empty", message="0 bytes", previous_failed=True)):
        out_q.put(message)
    code, message = coord._supervise([Alive()], queue.Queue(maxsize=100), out_q, stop=None)
    assert (code, message) == (exit_codes.SUCCEEDED, "processed 3 items")
    assert (coord.tally.ok, coord.tally.failed, coord.tally.skipped, coord.tally.failed_earlier) == (1, 1, 1, 1)
    assert coord.devices == {0: {"kind": "cpu"}} and coord.models_used == {"det": "d"}
    sent = [progress.get_nowait() for _ in range(3)]
    assert all(isinstance(p, ShardProgress) and p.shard == 4 for p in sent)
    assert [p.item.key for p in sent] == ["a.png", "b.png", "c.png"]
    _, summary = coord.finish(code, message)
    assert summary.context.devices == ({"kind": "cpu"},) and summary.items.pages == 2


def test_a_fatal_message_ends_the_shard_with_its_exit_code(tmp_path: Path) -> None:
    coord, _ = coordinator(tmp_path, ["a.png"])
    out_q: queue.Queue = queue.Queue()
    out_q.put(Fatal(0, exit_codes.DEVICE_UNAVAILABLE, "no GPU"))
    out_q.put(Exited(0))
    assert coord._supervise([Alive()], queue.Queue(maxsize=100), out_q, stop=None) == (
        exit_codes.DEVICE_UNAVAILABLE, "no GPU")
