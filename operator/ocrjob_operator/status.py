"""The OcrJob status, computed from what was observed (plan, shard states, heartbeats) — pure.

Phases and condition types are `api.phases`' enums; the status dicts hold their plain string values.

`compute_status` builds the whole status; `status_patch` compares it with the current one and returns
only what changed (nothing when nothing changed), so the operator writes status only on change.
Condition transition times are kept from the previous status while a condition's status stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inference_pod.job.records import utc_iso
from ocrjob_operator.api.phases import ConditionType, Phase
from ocrjob_operator.classify import Category, PodOutcome
from ocrjob_operator.decide import Decision, Outcome, ShardPhase, ShardState

FAILED_SHARDS_KEPT = 50
ITEM_KEYS = ("ok", "failed", "skipped")


@dataclass(frozen=True)
class ItemCounts:
    """A job's (or shard's) documents with a result: `failed` has an error record (whichever attempt wrote it),
    `ok` an ok result of the latest attempt, `skipped` an ok result an earlier attempt wrote. Disjoint."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped

    @classmethod
    def from_record(cls, items: dict[str, Any] | None) -> ItemCounts:
        """The counts of a shard record (heartbeat, shard summary, termination message). A resumed attempt counts
        the error records of earlier attempts as `failed_earlier` within its `skipped`: they are failed here."""
        items = items or {}
        ok, failed, skipped = (int(items.get(k) or 0) for k in ITEM_KEYS)
        earlier = min(int(items.get("failed_earlier") or 0), skipped)
        return cls(ok, failed + earlier, skipped - earlier)

    @classmethod
    def from_job_counts(cls, items: dict[str, Any] | None) -> ItemCounts:
        """Counts already split this way: the job summary's (`summary.json`, from storage), or a status's."""
        items = items or {}
        return cls(**{k: int(items.get(k) or 0) for k in ITEM_KEYS})


def at_least(*counts: ItemCounts) -> ItemCounts:
    """The largest counts all of these lower bounds of storage allow together. Ok results and error records only
    ever grow, so the most ok results (with that record's ok/skipped split) and the most error records any of
    them saw are still a lower bound, and neither `done` nor `failed` can go back."""
    if not counts:
        return ItemCounts()
    okish = max(counts, key=lambda c: c.ok + c.skipped)
    return ItemCounts(okish.ok, max(c.failed for c in counts), okish.skipped)


def shard_items(state: ShardState, heartbeat: dict[str, Any] | None,
                storage_summary: dict[str, Any] | None = None) -> ItemCounts:
    """Best knowledge of a shard's item counts: at least what the running pod's heartbeat, the summary in
    storage and every attempt's summary say. A retry's heartbeat starts again from 0 while it skips what earlier
    attempts wrote; the earlier records keep the counts from going back meanwhile."""
    records = []
    active = state.active_pod
    if active is not None and heartbeat and heartbeat.get("pod") == active.name:
        records.append(heartbeat.get("items"))
    records += [source.get("items") for source in (storage_summary, *(p.summary for p in state.attempts)) if source]
    return at_least(*(ItemCounts.from_record(items) for items in records if items))


@dataclass
class Observed:
    """Everything the status of a planned job is computed from."""

    generation: int
    plan_location: str
    plan: dict[str, Any]  # shard_count, item_count, total_bytes, planning_seconds
    states: list[ShardState]
    items: dict[int, ItemCounts]
    decision: Decision
    now: float
    suspended: bool
    start_time: str | None = None
    summary_location: str | None = None
    planning_attempts: int = 0
    extra_message: str = ""
    pending_reasons: list[str] = field(default_factory=list)
    health: Health | None = None
    vanished_pods: dict[str, Any] | None = None  # status.vanishedPods (observe.PodHistory.record)
    stored_items: ItemCounts | None = None  # a finished job's counts, from its job summary (from storage)
    unschedulable_timeout_seconds: int = 0  # spec.scheduling.unschedulableTimeoutSeconds (0: no bound)


@dataclass(frozen=True)
class Health:
    """What the StorageAvailable and Unschedulable conditions say: the problem while it lasts, else None."""

    storage_problem: str | None = None
    unschedulable: str | None = None

    def truth(self) -> dict[ConditionType, tuple[bool, str, str]]:
        storage, pods = self.storage_problem, self.unschedulable
        return {
            ConditionType.STORAGE_AVAILABLE: (storage is None, "StorageUnavailable" if storage else "Available",
                                              storage or ""),
            ConditionType.UNSCHEDULABLE: (pods is not None, "Unschedulable" if pods else "Scheduled", pods or ""),
        }


def _condition(ctype: ConditionType, status: bool, reason: str, message: str, generation: int,
               previous: dict[str, dict[str, Any]], now: float) -> dict[str, Any]:
    value = "True" if status else "False"
    old = previous.get(ctype) or {}
    since = old.get("lastTransitionTime") if old.get("status") == value else None
    return {"type": ctype.value, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since or utc_iso(now), "observedGeneration": generation}


def conditions(phase: Phase | str, reason: str, message: str, planned: bool, generation: int,
               previous: list[dict[str, Any]] | None, now: float, health: Health | None = None) -> list[dict[str, Any]]:
    """One condition per ConditionType; the one named like the phase is True (Planned: once planned)."""
    phase = Phase(phase)
    old = {c.get("type"): c for c in previous or []}
    running, suspended = phase is Phase.RUNNING, phase is Phase.SUSPENDED
    succeeded, failed = phase is Phase.SUCCEEDED, phase is Phase.FAILED
    truth = {
        ConditionType.PLANNED: (planned, "Planned" if planned else "NotPlanned",
                                "the plan is stored; the job is never re-planned" if planned else "not planned yet"),
        ConditionType.RUNNING: (running, reason if running else phase.value, message if running else ""),
        ConditionType.SUSPENDED: (suspended, "Suspended" if suspended else "NotSuspended",
                                  message if suspended else ""),
        ConditionType.SUCCEEDED: (succeeded, reason if succeeded else "NotFinished", message if succeeded else ""),
        ConditionType.FAILED: (failed, reason if failed else "NotFailed", message if failed else ""),
        **(health or Health()).truth(),
    }
    if health is None:  # not observed in this step (e.g. announcing planning): keep what the last step saw
        for ctype in Health().truth():
            if ctype in old:
                c = old[ctype]
                truth[ctype] = (c.get("status") == "True", c.get("reason", ""), c.get("message", ""))
    return [_condition(t, *truth[t], generation, old, now) for t in ConditionType]


def waiting_for_capacity(state: ShardState) -> PodOutcome | None:
    """The shard's pod when no node fits it (the scheduler said Unschedulable): it has not run."""
    pod = state.active_pod
    return pod if pod is not None and pod.category is Category.PENDING and pod.unschedulable_since is not None \
        else None


def _shard_counts(states: list[ShardState]) -> dict[str, int]:
    """Shards by phase; one whose pod no node fits is pending (waiting for capacity), not active."""
    counts = {"total": len(states), "pending": 0, "active": 0, "succeeded": 0, "failed": 0}
    for s in states:
        key = {ShardPhase.PENDING: "pending", ShardPhase.WAITING: "pending", ShardPhase.ACTIVE: "active",
               ShardPhase.SUCCEEDED: "succeeded", ShardPhase.FAILED: "failed"}[s.phase]
        counts["pending" if waiting_for_capacity(s) else key] += 1
    return counts


def _capacity_note(pods: list[PodOutcome], timeout: int) -> str:
    """What waiting for capacity means for the job: which pod, why, and when the job gives up."""
    first = min(pods, key=lambda p: p.unschedulable_since or 0.0)
    why = f"no node fits pod {first.name} ({first.message or first.reason})"
    if timeout <= 0:
        return f"{len(pods)} waiting for capacity: {why}; it waits as long as that takes " \
               "(spec.scheduling.unschedulableTimeoutSeconds=0)"
    gives_up = utc_iso((first.unschedulable_since or 0.0) + timeout)
    return (f"{len(pods)} waiting for capacity: {why}; unless a node fits it, the job fails with Unschedulable at "
            f"{gives_up} (spec.scheduling.unschedulableTimeoutSeconds={timeout})")


def compute_status(obs: Observed, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The full status of a planned job."""
    previous = previous or {}
    shards = _shard_counts(obs.states)
    total_items = int(obs.plan.get("item_count", 0))
    # Storage's counts once the job summary has them; until then never less than the last status said (it is
    # persisted, so an operator restart cannot make them go back either).
    done = obs.stored_items if obs.stored_items is not None else at_least(
        ItemCounts(*(sum(getattr(c, k) for c in obs.items.values()) for k in ITEM_KEYS)),
        ItemCounts.from_job_counts(previous.get("items")))
    failed_shards = [s for s in obs.states if s.phase is ShardPhase.FAILED]
    decision = obs.decision
    if decision.outcome is Outcome.SUCCEEDED:
        phase, reason = Phase.SUCCEEDED, "AllShardsSucceeded"
        message = f"all {shards['total']} shards succeeded: {done.ok} ok, {done.failed} failed, {done.skipped} skipped"
    elif decision.outcome is Outcome.FAILED and decision.fatal is not None:
        fatal = decision.fatal
        phase, reason = Phase.FAILED, fatal.reason or "ConfigError"
        message = f"shard {fatal.index} cannot run ({fatal.reason}): {fatal.message}"
    elif decision.outcome is Outcome.FAILED:
        phase, reason = Phase.FAILED, "ShardsFailed"
        first = failed_shards[0]
        message = (f"{len(failed_shards)} of {shards['total']} shards failed (shard {first.index}: {first.reason}: "
                   f"{first.message}); {shards['succeeded']} succeeded")
    elif obs.suspended:
        phase, reason = Phase.SUSPENDED, "Suspended"
        stopping = f", {shards['active']} pod(s) stopping" if shards["active"] else ""
        message = f"suspended by spec.suspend{stopping}; set it to false to continue"
    else:
        waiting = [pod for s in obs.states if (pod := waiting_for_capacity(s)) is not None]
        phase, reason = Phase.RUNNING, "ShardsRunning"
        if waiting and not (shards["active"] or shards["succeeded"] or shards["failed"]):
            phase, reason = Phase.PENDING, "WaitingForCapacity"  # nothing has run: the job is not running yet
        message = (f"{shards['active']} running, {shards['succeeded']} succeeded, {shards['pending']} pending, "
                   f"{shards['failed']} failed of {shards['total']} shards; {done.done}/{total_items} items")
        if waiting:
            message += "; " + _capacity_note(waiting, obs.unschedulable_timeout_seconds)
        if obs.pending_reasons:
            message += "; " + "; ".join(obs.pending_reasons[:2])
    if obs.extra_message:
        message += f"; {obs.extra_message}"
    attempts = [p for s in obs.states for p in s.attempts]
    status: dict[str, Any] = {
        "phase": phase.value,
        "message": message,
        "observedGeneration": obs.generation,
        "conditions": conditions(phase, reason, message, True, obs.generation, previous.get("conditions"), obs.now,
                                 obs.health),
        "planLocation": obs.plan_location,
        "planId": obs.plan.get("plan_id"),
        "planningAttempts": obs.planning_attempts,
        "startTime": obs.start_time or previous.get("startTime") or utc_iso(obs.now),
        "progress": f"{done.done}/{total_items}",
        "shardProgress": f"{shards['succeeded']}/{shards['total']}",
        "shards": shards,
        "items": {"total": total_items, "done": done.done, "ok": done.ok, "failed": done.failed,
                  "skipped": done.skipped},
        "retries": {"counted": sum(1 for p in attempts if p.counted),
                    "disruptions": sum(1 for p in attempts if p.category is Category.DISRUPTED),
                    "storage": sum(1 for p in attempts if p.category is Category.INFRASTRUCTURE)},
        "failedShards": [{"index": s.index, "reason": s.reason, "message": s.message}
                         for s in failed_shards[:FAILED_SHARDS_KEPT]],
    }
    if phase.is_finished():
        status["completionTime"] = previous.get("completionTime") or utc_iso(obs.now)
    if obs.summary_location:
        status["summaryLocation"] = obs.summary_location
    vanished = obs.vanished_pods if obs.vanished_pods is not None else previous.get("vanishedPods")
    if vanished and vanished.get("count"):
        status["vanishedPods"] = vanished
    return status


def unplanned_status(phase: Phase | str, reason: str, message: str, generation: int, previous: dict[str, Any] | None,
                     now: float, planning_attempts: int = 0, health: Health | None = None) -> dict[str, Any]:
    """Status before a plan exists (Pending, Planning) or when planning failed for good (Failed)."""
    previous, phase = previous or {}, Phase(phase)
    status: dict[str, Any] = {
        "phase": phase.value, "message": message, "observedGeneration": generation,
        "conditions": conditions(phase, reason, message, False, generation, previous.get("conditions"), now,
                                 health),
        "planningAttempts": planning_attempts,
    }
    if phase is Phase.FAILED:
        status["completionTime"] = previous.get("completionTime") or utc_iso(now)
    return status


def storage_unavailable(status: dict[str, Any], message: str, now: float) -> dict[str, Any]:
    """The status as it is, with `message` and StorageAvailable=False (a step that could not read the plan)."""
    previous = {c.get("type"): c for c in status.get("conditions") or []}
    generation = int(status.get("observedGeneration") or 0)
    down = _condition(ConditionType.STORAGE_AVAILABLE, False, "StorageUnavailable", message, generation, previous, now)
    kept = [c for c in status.get("conditions") or [] if c.get("type") != ConditionType.STORAGE_AVAILABLE]
    return {**status, "message": message, "conditions": [*kept, down]}


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning `current` into `desired` at the top level; empty when they are equal."""
    current = current or {}
    patch = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in desired})
    return patch
