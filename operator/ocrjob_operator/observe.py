"""Observe a planned OcrJob: everything a decision needs, gathered before any decision is made.

One `Observation` holds the pods as classified (plus the pods this process created that the listing does
not show yet: the Job controller's "expectations"), the shard states they give, the heartbeats of running
shards and the stall verdicts, and the summaries in storage of shards that have no pods (finished by an
earlier incarnation whose pods were deleted). Reads only; the controller acts on the decision afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference_pod.job.errors import StorageError, StorageUnavailable
from ocrjob_operator.api.fields import VANISHED_KEPT
from ocrjob_operator.api.names import parse_pod_name
from ocrjob_operator.api.spec import JobSpec
from ocrjob_operator.classify import Category, PodOutcome, classify_pod
from ocrjob_operator.decide import ShardPhase, ShardState, StallTracker, shard_states
from ocrjob_operator.status import Health, ItemCounts, shard_items

log = logging.getLogger("ocrjob.observe")

CREATED_GRACE_SECONDS = 30.0  # a pod we created but cannot list yet still counts against parallelism
FIRST_HEARTBEAT_GRACE = 300.0  # seconds a running pod may take to write its first heartbeat


@dataclass
class Expectations:
    """Pods this process created, by name, with the monotonic time of creation: until the listing shows them
    (or CREATED_GRACE_SECONDS pass) they count as pending, so a slow watch cannot make us exceed parallelism."""

    created: dict[str, float] = field(default_factory=dict)

    def placeholders(self, listed: set[str], now: float, mono: float) -> list[PodOutcome]:
        for name, at in list(self.created.items()):
            if name in listed or mono - at > CREATED_GRACE_SECONDS:
                del self.created[name]
        out = []
        for name, at in self.created.items():
            parsed = parse_pod_name(name)
            if parsed is not None:
                out.append(PodOutcome(name=name, shard=parsed.shard, attempt=parsed.attempt,
                                      category=Category.PENDING, reason="Created", created_at=now - (mono - at)))
        return out


VANISHED = "Vanished"


@dataclass
class PodHistory:
    """The shard pods this process has listed (or learned of from status), so that a pod which disappears
    without finishing (force-deleted, deleted by someone) is noticed, counted and explained, and its attempt
    number is never reused. Pods this operator deleted itself (suspend, fail fast) are not "vanished".
    A pod that finished and was then removed by someone else (the Eviction API deletes the pod it evicts a moment
    after it ends) keeps its finished outcome in the shard's record: the retry it causes is explained and counted
    by that outcome, not started as if the shard had never run. Kept by this process only."""

    last_seen: dict[str, PodOutcome] = field(default_factory=dict)
    vanished: dict[str, _Vanished] = field(default_factory=dict)  # synthetic DISRUPTED outcomes, by pod name
    vanished_total: int = 0
    removed: dict[str, PodOutcome] = field(default_factory=dict)  # finished, then deleted by someone else
    attempt_floors: dict[int, int] = field(default_factory=dict)  # shard -> lowest attempt number not yet used
    deleted: set[str] = field(default_factory=set)
    seeded: bool = False

    def seed(self, status: dict[str, Any]) -> None:
        """After an operator restart: the vanished pods recorded in status (their names stay used)."""
        if self.seeded:
            return
        self.seeded = True
        record = status.get("vanishedPods") or {}
        self.vanished_total = max(self.vanished_total, int(record.get("count") or 0))
        for entry in record.get("pods") or []:
            pod = vanished_outcome(str(entry.get("name", "")), int(entry.get("shard", -1)),
                                   int(entry.get("attempt", -1)), float(entry.get("at") or 0.0),
                                   str(entry.get("lastSeen") or "Running"))
            self.vanished.setdefault(pod.name, pod)
            self._floor(pod)

    def _floor(self, pod: PodOutcome) -> None:
        self.attempt_floors[pod.shard] = max(self.attempt_floors.get(pod.shard, 0), pod.attempt + 1)

    def update(self, listed: list[PodOutcome], now: float) -> list[PodOutcome]:
        """Record this step's listing; returns the pods that vanished since the previous one."""
        names = {p.name for p in listed}
        gone = []
        for name, pod in list(self.last_seen.items()):
            if name in names:
                continue
            del self.last_seen[name]
            if name in self.deleted or name in self.vanished:
                continue
            if not pod.active:
                self.removed[name] = pod
                continue
            lost = vanished_outcome(name, pod.shard, pod.attempt, now, pod.category.value)
            self.vanished[name] = lost
            self.vanished_total += 1
            gone.append(lost)
        for pod in listed:
            self.last_seen[pod.name] = pod
            self._floor(pod)
        return gone

    def outcomes(self, listed: set[str]) -> list[PodOutcome]:
        """The vanished and removed pods as outcomes (a pod recreated under the same name is its listing instead)."""
        return [p for name, p in (*self.vanished.items(), *self.removed.items()) if name not in listed]

    def record(self) -> dict[str, Any]:
        """status.vanishedPods."""
        pods = sorted(self.vanished.values(), key=lambda p: p.finished_at or 0.0)[-VANISHED_KEPT:]
        return {"count": self.vanished_total,
                "pods": [{"name": p.name, "shard": p.shard, "attempt": p.attempt, "at": p.finished_at or 0.0,
                          "lastSeen": p.last_seen} for p in pods]}


@dataclass(frozen=True)
class _Vanished(PodOutcome):
    last_seen: str = ""  # the category it was last listed in


def vanished_outcome(name: str, shard: int, attempt: int, at: float, last_seen: str) -> _Vanished:
    return _Vanished(name=name, shard=shard, attempt=attempt, category=Category.DISRUPTED, reason=VANISHED,
                     message=f"pod {name} disappeared before it finished (last seen {last_seen}): it was deleted "
                             "(force-deleted, or by someone other than the operator); the shard is retried without "
                             "spending retries.perShard",
                     created_at=at, finished_at=at, last_seen=last_seen)


@dataclass
class Observation:
    """A planned job as seen in one step."""

    plan: dict[str, Any]
    states: list[ShardState]
    heartbeats: dict[int, dict[str, Any]]
    stalled: frozenset[str]
    storage_summaries: dict[int, dict[str, Any]]  # shards that succeeded without a pod we can see
    now: float
    vanished: list[PodOutcome] = field(default_factory=list)  # pods found gone this step
    storage_errors: list[str] = field(default_factory=list)  # this step's own reads that storage did not answer
    held: bool = False  # shards were due to start, but storage did not answer: none started

    @property
    def items(self) -> dict[int, ItemCounts]:
        return {s.index: shard_items(s, self.heartbeats.get(s.index), self.storage_summaries.get(s.index))
                for s in self.states}

    @property
    def health(self) -> Health:
        """Storage down (this step's own reads, or a shard whose latest attempt exited 74) and unschedulable pods."""
        storage = self.storage_errors[0] if self.storage_errors else None
        for s in self.states:
            if storage is None and s.infrastructure_since is not None and s.phase is not ShardPhase.SUCCEEDED:
                # ... until a retry of that shard shows progress again (its own heartbeat).
                pod, beat = s.active_pod, self.heartbeats.get(s.index) or {}
                if pod is None or beat.get("pod") != pod.name:
                    storage = next(p.message for p in reversed(s.attempts) if not p.active)
        stuck = sorted(f"pod {p.name}: {p.message or p.reason}" for s in self.states for p in s.attempts
                       if p.active and p.unschedulable_since is not None)
        return Health(storage_problem=storage, unschedulable="; ".join(stuck[:3]) if stuck else None)

    @property
    def pending_reasons(self) -> list[str]:
        return sorted({f"pod {p.name}: {p.reason}: {p.message}" for s in self.states for p in s.attempts
                       if p.category is Category.PENDING and p.message and p.unschedulable_since is None})


def observe(plan: dict[str, Any], raw_pods: list[dict[str, Any]], spec: JobSpec, storage: Any, job_id: str,
            expectations: Expectations, stalls: StallTracker, known_done: dict[int, dict[str, Any]],
            now: float, mono: float, history: PodHistory | None = None) -> Observation:
    """Gather one step's view. `known_done` (shard -> stored summary) is updated in place: a cache of shards
    found succeeded in storage, so each is read once per operator process. `history` (updated in place) turns
    pods that disappeared unfinished into DISRUPTED outcomes and keeps their attempt numbers used."""
    pods = [classify_pod(p, now) for p in raw_pods]
    gone: list[PodOutcome] = []
    floors: dict[int, int] = {}
    if history is not None:
        gone = history.update(pods, now)
        pods += history.outcomes({p.name for p in pods})
        floors = history.attempt_floors
    pods += expectations.placeholders({p.name for p in pods}, now, mono)
    shard_count = int(plan["shard_count"])
    errors: list[str] = []

    def read(fn: Callable[[str, int], dict[str, Any] | None], shard: int) -> dict[str, Any] | None:
        return _read(fn, job_id, shard, errors)

    states = shard_states(shard_count, pods, spec, now, frozenset(known_done), floors)
    # Shards that would be started now but have no pods: were they finished by an earlier incarnation? Each
    # one found done frees its slot for the next, which is checked too, until the slots are filled.
    free = max(0, spec.parallelism - sum(1 for s in states if s.active_pod is not None))
    checked: set[int] = set()
    while True:
        candidates = [s.index for s in states if s.phase is ShardPhase.PENDING and not s.attempts][:free]
        unchecked = [shard for shard in candidates if shard not in checked]
        if not unchecked:
            break
        for shard in unchecked:
            checked.add(shard)
            summary = read(storage.shard_summary, shard)
            if summary and summary.get("status") == "succeeded":
                known_done[shard] = summary
        states = shard_states(shard_count, pods, spec, now, frozenset(known_done), floors)
    heartbeats = {}
    for state in states:
        pod = state.active_pod
        if pod is not None and pod.category is Category.RUNNING:
            beat = read(storage.heartbeat, state.index)
            if beat is not None:
                heartbeats[state.index] = beat
    return Observation(plan=plan, states=states, heartbeats=heartbeats,
                       stalled=stalled_pods(stalls, states, heartbeats, spec, mono),
                       storage_summaries=dict(known_done), now=now, vanished=gone, storage_errors=errors)


def _read(read: Callable[[str, int], dict[str, Any] | None], job_id: str, shard: int,
          errors: list[str]) -> dict[str, Any] | None:
    try:
        return read(job_id, shard)
    except StorageError as exc:  # an unreadable heartbeat or summary this step is not a decision input
        log.warning("shard %s: %s", shard, exc)
        if isinstance(exc, StorageUnavailable):  # but an outage is reported (condition StorageAvailable=False)
            errors.append(str(exc))
        return None


def stalled_pods(tracker: StallTracker, states: list[ShardState], heartbeats: dict[int, dict[str, Any]],
                 spec: JobSpec, mono: float) -> frozenset[str]:
    """Running pods whose own heartbeat has not changed for the stall timeout (longer before the first one)."""
    stalled, running = set(), set()
    for state in states:
        pod = state.active_pod
        if pod is None or pod.category is not Category.RUNNING:
            continue
        beat = heartbeats.get(state.index)
        # Only this pod's own heartbeat counts (the file may still hold an earlier attempt's record).
        marker = (beat.get("updated_at"), str(beat.get("items"))) if beat and beat.get("pod") == pod.name else None
        running.add(pod.name)
        # Before its first heartbeat a pod is starting (imports, manifest, model download): more slack.
        limit = spec.stall_timeout_seconds if marker else max(spec.stall_timeout_seconds, FIRST_HEARTBEAT_GRACE)
        if tracker.observe(pod.name, marker, mono) > limit:
            stalled.add(pod.name)
    tracker.forget_except(running)
    return frozenset(stalled)
