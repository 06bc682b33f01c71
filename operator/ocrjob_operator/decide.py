"""Shard states and dispatch decisions: pure functions of the plan, the observed pods, the spec and the time.

Nothing here remembers anything: after an operator restart the same pods give the same states, and the
pod names (`<job>-s<shard>-a<attempt>`) make a repeated decision to create a pod a harmless conflict.
Pods of a running job are kept (the finished ones are the retry record) until the job finishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ocrjob_operator.api.fields import (
    INFRASTRUCTURE_BACKOFF_SECONDS,
    MAX_BACKOFF_SECONDS,
    MAX_INFRASTRUCTURE_BACKOFF_SECONDS,
)
from ocrjob_operator.api.spec import JobSpec
from ocrjob_operator.classify import Category, PodOutcome

DISRUPTION_RETRY_SECONDS = 2.0  # evicted/preempted shards restart quickly: nothing was wrong with them
MAX_DISRUPTIONS_PER_SHARD = 30  # a bound even for free retries (a node that evicts forever)


class ShardPhase(str, Enum):
    PENDING = "Pending"  # never started, or due for a retry now
    WAITING = "Waiting"  # failed, retry after the backoff
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # for good


@dataclass(frozen=True)
class ShardState:
    index: int
    phase: ShardPhase
    attempts: tuple[PodOutcome, ...] = ()
    counted_failures: int = 0
    disruptions: int = 0
    retry_at: float | None = None
    reason: str = ""
    message: str = ""
    fatal: PodOutcome | None = None  # a configuration error: the whole job fails fast
    attempt_floor: int = 0  # attempts below this were used by pods no longer listed: never reuse their names
    infrastructure_since: float | None = None  # the shard's current run of storage-unavailable failures began

    @property
    def next_attempt(self) -> int:
        return max(max((pod.attempt for pod in self.attempts), default=-1) + 1, self.attempt_floor)

    @property
    def active_pod(self) -> PodOutcome | None:
        return next((pod for pod in reversed(self.attempts) if pod.active), None)

    @property
    def latest(self) -> PodOutcome | None:
        return self.attempts[-1] if self.attempts else None


def backoff_seconds(counted_failures: int, base: int) -> float:
    """Delay before the retry that follows the n-th counted failure: base, 2·base, 4·base … capped."""
    if counted_failures <= 0:
        return 0.0
    return float(min(base * 2 ** min(counted_failures - 1, 20), MAX_BACKOFF_SECONDS))


def infrastructure_backoff_seconds(failures: int) -> float:
    """Delay after the n-th consecutive storage-unavailable failure: 5 s doubling, capped at 60 s."""
    return float(min(INFRASTRUCTURE_BACKOFF_SECONDS * 2 ** min(max(failures, 1) - 1, 20),
                     MAX_INFRASTRUCTURE_BACKOFF_SECONDS))


def _infrastructure_streak(attempts: tuple[PodOutcome, ...]) -> list[PodOutcome]:
    """The latest consecutive storage-unavailable failures (finished attempts only)."""
    streak: list[PodOutcome] = []
    for pod in reversed([p for p in attempts if not p.active]):
        if pod.category is not Category.INFRASTRUCTURE:
            break
        streak.append(pod)
    return streak[::-1]


def unschedulable_for(pod: PodOutcome, spec: JobSpec, now: float) -> bool:
    """An active pod no node fits, for longer than spec.scheduling.unschedulableTimeoutSeconds (0: never)."""
    return (pod.active and pod.unschedulable_since is not None and spec.unschedulable_timeout_seconds > 0
            and now - pod.unschedulable_since >= spec.unschedulable_timeout_seconds)


def shard_state(index: int, pods: list[PodOutcome], spec: JobSpec, now: float,
                succeeded_in_storage: bool = False, attempt_floor: int = 0) -> ShardState:
    attempts = tuple(sorted(pods, key=lambda p: (p.attempt, p.created_at)))
    counted = sum(1 for p in attempts if p.counted)
    disruptions = sum(1 for p in attempts if p.category is Category.DISRUPTED)
    streak = _infrastructure_streak(attempts)
    since = (streak[0].finished_at or streak[0].created_at) if streak else None
    common = dict(index=index, attempts=attempts, counted_failures=counted, disruptions=disruptions,
                  attempt_floor=attempt_floor, infrastructure_since=since)
    if succeeded_in_storage or any(p.category is Category.SUCCEEDED for p in attempts):
        return ShardState(phase=ShardPhase.SUCCEEDED, **common)  # type: ignore[arg-type]
    fatal = next((p for p in attempts if p.category is Category.CONFIG_ERROR), None)
    if fatal is not None:
        return ShardState(phase=ShardPhase.FAILED, reason=fatal.reason, message=fatal.message, fatal=fatal,
                          **common)  # type: ignore[arg-type]
    stuck = next((p for p in attempts if unschedulable_for(p, spec, now)), None)
    if stuck is not None:  # the job fails fast: every shard pod has the same scheduling constraints
        return ShardState(phase=ShardPhase.FAILED, reason="Unschedulable", fatal=stuck, message=(
            f"pod {stuck.name} could not be scheduled for {spec.unschedulable_timeout_seconds}s "
            f"(spec.scheduling.unschedulableTimeoutSeconds; 0 waits forever): {stuck.message or stuck.reason}; fix "
            "spec.nodeSelector, spec.tolerations, spec.affinity or spec.resources, or add nodes"),
            **common)  # type: ignore[arg-type]
    if any(p.active for p in attempts):
        return ShardState(phase=ShardPhase.ACTIVE, **common)  # type: ignore[arg-type]
    latest = attempts[-1] if attempts else None
    if latest is None:
        return ShardState(phase=ShardPhase.PENDING, **common)  # type: ignore[arg-type]
    if latest.category is Category.INPUT_ERROR:
        return ShardState(phase=ShardPhase.FAILED, reason=latest.reason,
                          message=f"not retried: {latest.message}", **common)  # type: ignore[arg-type]
    if counted > spec.retries:
        return ShardState(phase=ShardPhase.FAILED, reason="RetriesExhausted",
                          message=f"{counted} counted failure(s) with spec.retries.perShard={spec.retries}; last: "
                                  f"{latest.reason}: {latest.message}", **common)  # type: ignore[arg-type]
    if disruptions > MAX_DISRUPTIONS_PER_SHARD:
        return ShardState(phase=ShardPhase.FAILED, reason="TooManyDisruptions",
                          message=f"disrupted {disruptions} times (last: {latest.reason}); check the nodes and "
                                  "preemption settings", **common)  # type: ignore[arg-type]
    if latest.category is Category.INFRASTRUCTURE:
        assert since is not None
        if now - since > spec.infrastructure_timeout_seconds:
            return ShardState(phase=ShardPhase.FAILED, reason="StorageUnavailable", message=(
                f"storage has been unavailable to this shard for {int(now - since)}s (more than spec.retries."
                f"infrastructureTimeoutSeconds={spec.infrastructure_timeout_seconds}); last: {latest.message}"),
                **common)  # type: ignore[arg-type]
        delay = infrastructure_backoff_seconds(len(streak))
    elif latest.counted:
        delay = backoff_seconds(counted, spec.backoff_seconds)
    else:
        delay = DISRUPTION_RETRY_SECONDS
    retry_at = (latest.finished_at or latest.created_at) + delay
    phase = ShardPhase.PENDING if now >= retry_at else ShardPhase.WAITING
    return ShardState(phase=phase, retry_at=retry_at, reason=latest.reason, message=latest.message,
                      **common)  # type: ignore[arg-type]


def shard_states(shard_count: int, pods: list[PodOutcome], spec: JobSpec, now: float,
                 succeeded_in_storage: frozenset[int] = frozenset(),
                 attempt_floors: dict[int, int] | None = None) -> list[ShardState]:
    by_shard: dict[int, list[PodOutcome]] = {i: [] for i in range(shard_count)}
    for pod in pods:
        if pod.shard in by_shard:
            by_shard[pod.shard].append(pod)
    floors = attempt_floors or {}
    return [shard_state(i, by_shard[i], spec, now, i in succeeded_in_storage, floors.get(i, 0))
            for i in range(shard_count)]


class Outcome(str, Enum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass
class Decision:
    create: list[tuple[int, int]] = field(default_factory=list)  # (shard, attempt)
    delete: list[str] = field(default_factory=list)  # pod names to stop (suspend, fail fast)
    kill: list[str] = field(default_factory=list)  # stalled pods
    outcome: Outcome | None = None
    fatal: ShardState | None = None
    next_retry_at: float | None = None

    @property
    def idle(self) -> bool:
        return not (self.create or self.delete or self.kill)


def decide(states: list[ShardState], spec: JobSpec, now: float, stalled: frozenset[str] = frozenset()) -> Decision:
    decision = Decision()
    active = [s.active_pod for s in states if s.active_pod is not None]
    fatal = next((s for s in states if s.fatal is not None), None)
    if fatal is not None:
        decision.fatal = fatal
        decision.outcome = Outcome.FAILED
        decision.delete = [p.name for p in active if not p.deleting]
        return decision
    if all(s.phase in (ShardPhase.SUCCEEDED, ShardPhase.FAILED) for s in states):
        failed = any(s.phase is ShardPhase.FAILED for s in states)
        decision.outcome = Outcome.FAILED if failed else Outcome.SUCCEEDED
        return decision
    if spec.suspend:
        decision.delete = [p.name for p in active if not p.deleting]
        return decision
    decision.kill = sorted(p.name for p in active if p.name in stalled and p.category is Category.RUNNING)
    free = spec.parallelism - len(active)
    ready = [s for s in states if s.phase is ShardPhase.PENDING]
    decision.create = [(s.index, s.next_attempt) for s in ready[: max(0, free)]]
    waiting = [s.retry_at for s in states if s.phase is ShardPhase.WAITING and s.retry_at is not None]
    decision.next_retry_at = min(waiting, default=None)
    return decision


class StallTracker:
    """Remembers when each running pod's heartbeat last advanced, as seen by this operator process.

    The operator's own clock is used (not the pod's `updated_at`), so clock skew between nodes cannot kill
    a healthy shard. After an operator restart every running pod gets a fresh stall window: conservative.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[object, float]] = {}

    def observe(self, pod: str, marker: object, now: float) -> float:
        """Record the heartbeat marker of a running pod; returns seconds since it last changed."""
        previous = self._seen.get(pod)
        if previous is None or previous[0] != marker:
            self._seen[pod] = (marker, now)
            return 0.0
        return now - previous[1]

    def forget_except(self, running: set[str]) -> None:
        for name in [n for n in self._seen if n not in running]:
            del self._seen[name]
