"""`--wait`: progress from status, throughput/ETA, events once, the verdict, and the bounded loop (fake cluster)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_cli.wait import (
    EventFeed,
    PlainRenderer,
    Rate,
    Snapshot,
    Waiter,
    format_event,
    format_seconds,
    pod_of_job,
    progress_line,
    verdict,
)
from ocrjob_operator.api.names import pod_name

UID = "uid-1"


def job(phase: str | None = None, done: int = 0, total: int | None = 10, failed: int = 0, shards: int = 2,
        succeeded: int = 0, active: int = 0, uid: str = UID) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase:
        status = {"phase": phase, "message": f"{phase.lower()} message"}
    if total is not None and phase:
        status.update(planLocation="s3://b/out/_ocrjob/u/plan.json",
                      items={"total": total, "done": done, "ok": done - failed, "failed": failed, "skipped": 0},
                      shards={"total": shards, "succeeded": succeeded, "active": active, "pending": 0, "failed": 0})
    return {"metadata": {"name": "j", "uid": uid}, "status": status}


def event(uid: str, reason: str, when: str, count: int = 1, type_: str = "Normal", pod: str | None = None
          ) -> dict[str, Any]:
    obj = {"kind": "Pod", "name": pod} if pod else {"kind": "OcrJob", "name": "j"}
    return {"metadata": {"uid": uid}, "reason": reason, "message": f"{reason} happened", "type": type_,
            "lastTimestamp": when, "count": count, "involvedObject": obj}


def test_snapshot_before_and_after_planning() -> None:
    assert Snapshot.of(job()).phase == "Pending" and Snapshot.of(job()).total is None
    planning = Snapshot.of(job("Planning", total=None))
    assert (planning.phase, planning.total, planning.shards_total) == ("Planning", None, None)
    running = Snapshot.of(job("Running", done=4, failed=1, succeeded=1, active=1))
    assert (running.done, running.total, running.failed_items, running.shards_done, running.shards_total,
            running.shards_active) == (4, 10, 1, 1, 2, 1)


def test_rate_and_eta() -> None:
    rate = Rate(window=60)
    assert rate.per_second() is None and rate.eta(10) is None
    rate.add(0, 0)
    rate.add(10, 20)
    assert rate.per_second() == 2.0 and rate.eta(10) == 5.0 and rate.eta(0) == 0.0
    rate.add(20, 20)  # stalled for a while: the rate over the window drops
    assert rate.per_second() == 1.0
    rate.add(100, 40)  # old samples leave the window
    assert rate.samples[0][0] >= 20 and rate.per_second() == pytest.approx(20 / 80)
    rate.add(101, 5)  # counts went back (a shard restarted): start over
    assert list(rate.samples) == [(101, 5)] and rate.per_second() is None


def test_progress_line_and_durations() -> None:
    snap = Snapshot.of(job("Running", done=12, total=40, failed=1, shards=4, succeeded=1, active=2))
    assert progress_line(snap, 2.1, 13) == \
        "Running 12/40 items (1 failed), shards 1/4 (2 running), 2.10 items/s, ETA 0:13"
    assert progress_line(Snapshot.of(job("Planning", total=None)), None, None) == "Planning: planning message"
    assert (format_seconds(None), format_seconds(65.4), format_seconds(3725)) == ("?", "1:05", "1:02:05")


def test_verdict() -> None:
    assert verdict(job("Running"), UID) is None and verdict(job(), UID) is None
    assert verdict(job("Succeeded"), UID) is ExitCode.SUCCEEDED
    assert verdict(job("Failed"), UID) is ExitCode.FAILED
    assert verdict(None, UID) is ExitCode.NOT_FOUND
    assert verdict(job("Running", uid="other"), UID) is ExitCode.NOT_FOUND  # deleted and re-created


def test_events_are_shown_once_oldest_first_and_again_when_repeated() -> None:
    feed = EventFeed()
    a, b = event("a", "Planned", "2026-01-01T00:00:02Z"), event("b", "ShardStarted", "2026-01-01T00:00:01Z")
    assert [e["reason"] for e in feed.new([a, b])] == ["ShardStarted", "Planned"]
    assert feed.new([a, b]) == []
    assert [e["count"] for e in feed.new([event("a", "Planned", "2026-01-01T00:00:09Z", count=3)])] == [3]
    line = format_event(event("c", "FailedScheduling", "2026-01-01T10:11:12Z", count=2, type_="Warning",
                              pod=pod_name("j", 0, 0)))
    assert line == f"10:11:12 Warning FailedScheduling: pod/{pod_name('j', 0, 0)} FailedScheduling happened (x2)"


def test_pods_of_a_job() -> None:
    assert pod_of_job(pod_name("j", 0, 0), "j") and pod_of_job(pod_name("j", 12, 3), "j")
    assert not pod_of_job(pod_name("j-x", 0, 0), "j") and not pod_of_job(pod_name("jj", 0, 0), "j")
    assert not pod_of_job("j-s0", "j") and not pod_of_job("", "j")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 <= seconds <= 2.0  # every sleep is bounded by the poll interval
        self.now += max(seconds, 0.01)


def test_plain_renderer_prints_changes_throttled_and_every_phase_change() -> None:
    clock, buf = Clock(), io.StringIO()
    renderer = PlainRenderer(Console(file=buf, width=200), interval=10, clock=clock)
    renderer.update(Snapshot.of(job("Running", done=0)), None, None)
    clock.now = 1
    renderer.update(Snapshot.of(job("Running", done=1)), 1.0, 9)  # too soon: held back
    renderer.update(Snapshot.of(job("Running", done=1)), 1.0, 9)
    clock.now = 11
    renderer.update(Snapshot.of(job("Running", done=1)), 1.0, 9)  # due now, although nothing changed since
    clock.now = 12
    renderer.update(Snapshot.of(job("Running", done=2)), 1.0, 8)
    renderer.update(Snapshot.of(job("Succeeded", done=10)), 1.0, 0)  # a phase change is printed at once
    renderer.close()
    lines = buf.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["Running 0/10 items", "Running 1/10 items",
                                                      "Succeeded 10/10 items"]


class FakeApi:
    """Serves a scripted sequence of jobs (one per poll); errors in the script are raised."""

    def __init__(self, script: list[Any], events: list[list[dict[str, Any]]] | None = None) -> None:
        self.script, self.event_script = script, events or []
        self.polls = 0

    def find_job(self, name: str) -> dict[str, Any] | None:
        item = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        if isinstance(item, Exception):
            raise item
        return item

    def events(self, uid: str) -> list[dict[str, Any]]:
        return self.event_script[min(self.polls - 1, len(self.event_script) - 1)] if self.event_script else []

    def pod_warnings(self) -> list[dict[str, Any]]:
        return [event("w", "FailedScheduling", "2026-01-01T00:00:05Z", type_="Warning", pod=pod_name("j", 0, 0)),
                event("x", "FailedScheduling", "2026-01-01T00:00:05Z", type_="Warning", pod=pod_name("other", 0, 0))]


class Recorder:
    def __init__(self) -> None:
        self.updates: list[Snapshot] = []
        self.events: list[str] = []
        self.notes: list[str] = []

    def update(self, snap: Snapshot, rate: float | None, eta: float | None) -> None:
        self.updates.append(snap)

    def event(self, ev: dict[str, Any]) -> None:
        self.events.append(ev["reason"])

    def note(self, text: str) -> None:
        self.notes.append(text)

    def close(self) -> None:
        pass


def waiter(api: FakeApi, clock: Clock, renderer: Recorder) -> Waiter:
    return Waiter(api, renderer, poll=2.0, clock=clock, sleep=clock.sleep)


def test_wait_until_succeeded_shows_progress_and_each_event_once() -> None:
    planned = event("p", "Planned", "2026-01-01T00:00:01Z")
    started = event("s", "ShardStarted", "2026-01-01T00:00:02Z")
    api = FakeApi([job("Planning", total=None), job("Running", done=3), job("Running", done=7),
                   job("Succeeded", done=10, succeeded=2)],
                  [[planned], [planned, started], [planned, started], [planned, started]])
    clock, rec = Clock(), Recorder()
    result = waiter(api, clock, rec).wait("j", UID, timeout=60)
    assert result.code is ExitCode.SUCCEEDED and result.job is not None and result.waited == pytest.approx(6)
    assert [s.done for s in rec.updates] == [0, 3, 7, 10]
    assert rec.events == ["Planned", "FailedScheduling", "ShardStarted"]  # another job's pod event is not shown


def test_wait_times_out_within_the_timeout() -> None:
    api, clock, rec = FakeApi([job("Running", done=1)]), Clock(), Recorder()
    result = waiter(api, clock, rec).wait("j", UID, timeout=5)
    assert result.code is ExitCode.TIMEOUT and result.waited == pytest.approx(5)
    assert api.polls == 4  # t = 0, 2, 4, 5


def test_wait_retries_an_unreachable_apiserver_until_the_deadline() -> None:
    blip = CliError(ExitCode.CLUSTER, "cannot reach the apiserver", transient=True)
    api, clock, rec = FakeApi([blip, blip, job("Failed", done=2)]), Clock(), Recorder()
    assert waiter(api, clock, rec).wait("j", UID, timeout=60).code is ExitCode.FAILED
    assert len(rec.notes) == 2 and "retrying" in rec.notes[0] and "answers again" in rec.notes[1]
    api, clock, rec = FakeApi([blip]), Clock(), Recorder()
    assert waiter(api, clock, rec).wait("j", UID, timeout=7).code is ExitCode.TIMEOUT


def test_wait_stops_on_errors_that_waiting_cannot_fix() -> None:
    forbidden = CliError(ExitCode.CLUSTER, "forbidden")
    with pytest.raises(CliError):
        waiter(FakeApi([forbidden]), Clock(), Recorder()).wait("j", UID, timeout=60)


def test_wait_notices_a_deleted_job_and_hints_at_a_missing_operator() -> None:
    clock, rec = Clock(), Recorder()
    api = FakeApi([job()] * 20 + [None])
    result = waiter(api, clock, rec).wait("j", UID, timeout=600)
    assert result.code is ExitCode.NOT_FOUND
    assert len(rec.notes) == 1 and "is the OcrJob operator running" in rec.notes[0]
