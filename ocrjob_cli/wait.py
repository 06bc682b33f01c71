"""`--wait`: follow an OcrJob until it finishes or the timeout passes, showing progress and events.

The loop polls (bounded requests, bounded total time) rather than watching: a poll every few seconds is
plenty for a progress bar and survives apiserver restarts and proxies that cut long connections. Everything
it shows comes from the job's status (written by the operator) and its Events; throughput and ETA are
computed here from how `status.items.done` moves. The decisions (`verdict`, `Rate`, `EventFeed`) are pure;
the renderers draw a rich progress bar on a terminal and plain lines in CI logs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape

from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_operator.api.names import parse_pod_name
from ocrjob_operator.api.phases import Phase

POLL_SECONDS = 2.0
RATE_WINDOW_SECONDS = 120.0  # throughput over the last two minutes: recent enough for an ETA, smooth enough
NO_STATUS_HINT_SECONDS = 30.0  # a job without any status after this: the operator is probably not running
FINISHED = {Phase.SUCCEEDED: ExitCode.SUCCEEDED, Phase.FAILED: ExitCode.FAILED}


# -- pure parts --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """What the progress display shows, read from one status."""

    phase: str
    message: str
    done: int
    total: int | None  # None until planned
    failed_items: int
    shards_done: int
    shards_total: int | None
    shards_active: int
    shards_failed: int

    @classmethod
    def of(cls, job: dict[str, Any]) -> Snapshot:
        status = job.get("status") or {}
        items, shards = status.get("items") or {}, status.get("shards") or {}
        planned = bool(status.get("planLocation")) and "total" in items
        return cls(
            phase=status.get("phase") or Phase.PENDING.value,
            message=status.get("message") or "",
            done=int(items.get("done") or 0),
            total=int(items["total"]) if planned else None,
            failed_items=int(items.get("failed") or 0),
            shards_done=int(shards.get("succeeded") or 0),
            shards_total=int(shards["total"]) if planned and "total" in shards else None,
            shards_active=int(shards.get("active") or 0),
            shards_failed=int(shards.get("failed") or 0),
        )


class Rate:
    """Items per second over a sliding window of (time, done) samples; ETA from it."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> None:
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()  # counts went back (a shard restarted from its heartbeat): start over
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else (0.0 if t1 > t0 else None)

    def eta(self, remaining: int) -> float | None:
        rate = self.per_second()
        if remaining <= 0:
            return 0.0
        return remaining / rate if rate else None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(snap: Snapshot, rate: float | None, eta: float | None) -> str:
    """One line for logs: 'Running 12/40 items (1 failed), shards 1/4 (2 running), 2.10 items/s, ETA 0:13'."""
    if snap.total is None:
        return f"{snap.phase}: {snap.message}" if snap.message else snap.phase
    failed = f" ({snap.failed_items} failed)" if snap.failed_items else ""
    shards = f"shards {snap.shards_done}/{snap.shards_total}"
    extra = [f"{snap.shards_active} running"] if snap.shards_active else []
    if snap.shards_failed:
        extra.append(f"{snap.shards_failed} failed")
    if extra:
        shards += f" ({', '.join(extra)})"
    speed = f"{rate:.2f} items/s" if rate is not None else "- items/s"
    return f"{snap.phase} {snap.done}/{snap.total} items{failed}, {shards}, {speed}, ETA {format_seconds(eta)}"


def verdict(job: dict[str, Any] | None, uid: str) -> ExitCode | None:
    """The exit code once the job finished (or vanished), None while it runs."""
    if job is None or (job.get("metadata") or {}).get("uid") != uid:
        return ExitCode.NOT_FOUND  # deleted (or deleted and re-created under the same name) while waiting
    return FINISHED.get((job.get("status") or {}).get("phase") or "")


def _event_time(event: dict[str, Any]) -> str:
    return (event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
            or (event.get("metadata") or {}).get("creationTimestamp") or "")


def event_order(event: dict[str, Any]) -> tuple[str, int]:
    """Oldest first. Event times have one-second resolution: within a second, the resourceVersion (etcd's
    revision, an increasing number in practice) keeps the order in which they were written."""
    version = str((event.get("metadata") or {}).get("resourceVersion") or "")
    return _event_time(event), int(version) if version.isdigit() else 0


class EventFeed:
    """Hands out each Event once (again when its count grows), oldest first."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def new(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fresh = []
        for event in sorted(events, key=event_order):
            uid = (event.get("metadata") or {}).get("uid") or f"{_event_time(event)}{event.get('message')}"
            count = int(event.get("count") or 1)
            if self.seen.get(uid, 0) < count:
                self.seen[uid] = count
                fresh.append(event)
        return fresh


def format_event(event: dict[str, Any]) -> str:
    when = _event_time(event)
    clock = when[11:19] if len(when) >= 19 else when
    obj = event.get("involvedObject") or {}
    who = f"pod/{obj.get('name')} " if obj.get("kind") == "Pod" else ""
    count = int(event.get("count") or 1)
    times = f" (x{count})" if count > 1 else ""
    return f"{clock} {event.get('type', 'Normal'):<7} {event.get('reason', '')}: {who}{event.get('message', '')}{times}"


def pod_of_job(pod_name: str, job_name: str) -> bool:
    """Whether `pod_name` is a shard pod of the job named `job_name` (by the pod name format)."""
    parsed = parse_pod_name(pod_name)
    return parsed is not None and parsed.job == job_name


# -- rendering ---------------------------------------------------------------------------------------------------
class Renderer(Protocol):
    def update(self, snap: Snapshot, rate: float | None, eta: float | None) -> None: ...
    def event(self, event: dict[str, Any]) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


def _event_markup(event: dict[str, Any]) -> str:
    line = escape(format_event(event))
    return f"[yellow]{line}[/]" if event.get("type") == "Warning" else line


class PlainRenderer:
    """For CI logs and pipes: a progress line when something changed (at most every `interval` seconds, and
    always on a phase change), events as they come."""

    def __init__(self, console: Console, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.interval, self.clock = console, interval, clock
        self._key: tuple[Any, ...] | None = None
        self._pending: str | None = None  # the latest line, not printed yet
        self._printed_phase: str | None = None
        self._last_at: float | None = None

    def update(self, snap: Snapshot, rate: float | None, eta: float | None) -> None:
        now = self.clock()
        key = (snap.phase, snap.done, snap.total, snap.shards_done, snap.shards_active, snap.shards_failed)
        if key != self._key:
            self._key, self._pending = key, progress_line(snap, rate, eta)
        if self._pending is None:
            return
        if self._last_at is None or now - self._last_at >= self.interval or snap.phase != self._printed_phase:
            self.console.print(escape(self._pending), soft_wrap=True, highlight=False)
            self._printed_phase, self._last_at, self._pending = snap.phase, now, None

    def event(self, event: dict[str, Any]) -> None:
        self.console.print(_event_markup(event), soft_wrap=True, highlight=False)

    def note(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)

    def close(self) -> None:
        if self._pending is not None:
            self.console.print(escape(self._pending), soft_wrap=True, highlight=False)
            self._pending = None


class RichRenderer:
    """For terminals: a live progress bar (items done/total, shards, throughput, ETA) with events above it."""

    def __init__(self, console: Console, name: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), TextColumn("{task.fields[phase]}"), BarColumn(),
            TextColumn("{task.fields[items]}"), TextColumn("{task.fields[shards]}"), TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"), console=console, transient=False, refresh_per_second=4)
        self.task = self.progress.add_task(name, total=None, phase=Phase.PENDING.value, items="", shards="", rate="",
                                           eta="?")
        self.progress.start()

    def update(self, snap: Snapshot, rate: float | None, eta: float | None) -> None:
        failed = f" [red]({snap.failed_items} failed)[/]" if snap.failed_items else ""
        shards = f"shards {snap.shards_done}/{snap.shards_total}" if snap.shards_total is not None else ""
        if snap.shards_active:
            shards += f" ({snap.shards_active} running)"
        self.progress.update(
            self.task, total=snap.total, completed=snap.done, phase=snap.phase,
            items=f"{snap.done}/{snap.total} items{failed}" if snap.total is not None else "planning",
            shards=shards, rate=f"{rate:.2f} items/s" if rate is not None else "", eta=format_seconds(eta))

    def event(self, event: dict[str, Any]) -> None:
        self.progress.console.print(_event_markup(event), soft_wrap=True, highlight=False)

    def note(self, text: str) -> None:
        self.progress.console.print(text, soft_wrap=True, highlight=False)

    def close(self) -> None:
        self.progress.stop()


# -- the loop ----------------------------------------------------------------------------------------------------
class JobSource(Protocol):
    def find_job(self, name: str) -> dict[str, Any] | None: ...
    def events(self, uid: str) -> list[dict[str, Any]]: ...
    def pod_warnings(self) -> list[dict[str, Any]]: ...


@dataclass
class WaitResult:
    code: ExitCode
    job: dict[str, Any] | None
    waited: float


@dataclass
class Waiter:
    api: JobSource
    renderer: Renderer
    poll: float = POLL_SECONDS
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    feed: EventFeed = field(default_factory=EventFeed)
    rate: Rate = field(default_factory=Rate)

    def wait(self, name: str, uid: str, timeout: float) -> WaitResult:
        """Until the job finishes, vanishes, or `timeout` seconds pass. Connection trouble is retried until then."""
        start = self.clock()
        deadline = start + timeout
        job: dict[str, Any] | None = None
        hinted = unreachable = False
        while True:
            try:
                job = self.api.find_job(name)
                code = verdict(job, uid)
                if job is not None and code is not ExitCode.NOT_FOUND:
                    self._show_events(name, uid)
                    snap = Snapshot.of(job)
                    if snap.total is not None:
                        self.rate.add(self.clock(), snap.done)
                    self.renderer.update(snap, self.rate.per_second(),
                                         self.rate.eta(snap.total - snap.done) if snap.total is not None else None)
                    if not job.get("status") and not hinted and self.clock() - start > NO_STATUS_HINT_SECONDS:
                        hinted = True
                        self.renderer.note(f"[yellow]no status after {NO_STATUS_HINT_SECONDS:.0f}s: is the OcrJob "
                                           "operator running and watching this namespace? (kubectl -n ocrjob-system "
                                           "get deploy,pods)[/]")
                if unreachable:
                    unreachable = False
                    self.renderer.note("the apiserver answers again")
                if code is not None:
                    return WaitResult(code, job, self.clock() - start)
            except CliError as exc:
                if not exc.transient:
                    raise
                if not unreachable:  # an apiserver restart or a network blip: keep trying until the deadline
                    unreachable = True
                    self.renderer.note(f"[yellow]{escape(exc.message)}; retrying until the timeout[/]")
            now = self.clock()
            if now >= deadline:
                return WaitResult(ExitCode.TIMEOUT, job, now - start)
            self.sleep(max(0.0, min(self.poll, deadline - now)))

    def _show_events(self, name: str, uid: str) -> None:
        events = self.api.events(uid)
        try:  # pod Warning events (FailedScheduling, ...) say why a shard does not start
            events += [e for e in self.api.pod_warnings()
                       if pod_of_job((e.get("involvedObject") or {}).get("name", ""), name)]
        except CliError as exc:
            if exc.code is not ExitCode.CLUSTER:
                raise  # CLUSTER: forbidden or a blip; the job's own events are what matters
        for event in self.feed.new(events):
            self.renderer.event(event)
