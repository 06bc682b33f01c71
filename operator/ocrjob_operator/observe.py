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

from inference_pod.job.errors import StorageError
from ocrjob_operator.api.names import parse_pod_name
from ocrjob_operator.api.spec import JobSpec
from ocrjob_operator.classify import Category, PodOutcome, classify_pod
from ocrjob_operator.decide import ShardPhase, ShardState, StallTracker, shard_states
from ocrjob_operator.status import ItemCounts, shard_items

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


@dataclass
class Observation:
    """A planned job as seen in one step."""

    plan: dict[str, Any]
    states: list[ShardState]
    heartbeats: dict[int, dict[str, Any]]
    stalled: frozenset[str]
    storage_summaries: dict[int, dict[str, Any]]  # shards that succeeded without a pod we can see
    now: float

    @property
    def items(self) -> dict[int, ItemCounts]:
        return {s.index: shard_items(s, self.heartbeats.get(s.index), self.storage_summaries.get(s.index))
                for s in self.states}

    @property
    def pending_reasons(self) -> list[str]:
        return sorted({f"pod {p.name}: {p.reason}: {p.message}" for s in self.states for p in s.attempts
                       if p.category is Category.PENDING and p.message})


def observe(plan: dict[str, Any], raw_pods: list[dict[str, Any]], spec: JobSpec, storage: Any, job_id: str,
            expectations: Expectations, stalls: StallTracker, known_done: dict[int, dict[str, Any]],
            now: float, mono: float) -> Observation:
    """Gather one step's view. `known_done` (shard -> stored summary) is updated in place: a cache of shards
    found succeeded in storage, so each is read once per operator process."""
    pods = [classify_pod(p, now) for p in raw_pods]
    pods += expectations.placeholders({p.name for p in pods}, now, mono)
    shard_count = int(plan["shard_count"])
    states = shard_states(shard_count, pods, spec, now, frozenset(known_done))
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
            summary = _read(storage.shard_summary, job_id, shard)
            if summary and summary.get("status") == "succeeded":
                known_done[shard] = summary
        states = shard_states(shard_count, pods, spec, now, frozenset(known_done))
    heartbeats = {}
    for state in states:
        pod = state.active_pod
        if pod is not None and pod.category is Category.RUNNING:
            beat = _read(storage.heartbeat, job_id, state.index)
            if beat is not None:
                heartbeats[state.index] = beat
    return Observation(plan=plan, states=states, heartbeats=heartbeats,
                       stalled=stalled_pods(stalls, states, heartbeats, spec, mono),
                       storage_summaries=dict(known_done), now=now)


def _read(read: Callable[[str, int], dict[str, Any] | None], job_id: str, shard: int) -> dict[str, Any] | None:
    try:
        return read(job_id, shard)
    except StorageError as exc:  # an unreadable heartbeat or summary this step is not a decision input
        log.warning("shard %s: %s", shard, exc)
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
