"""One reconcile step for one OcrJob, in the Job controller's order: get the job → observe everything →
decide (pure) → act → write status once.

Called repeatedly by the job's kopf daemon, in a worker thread (it blocks on the Kubernetes and S3 clients).
Each step returns the status it wants and the delay until the next step; `reconcile` writes that status,
and only when it differs from the current one. Idempotent: everything is derived from the plan in storage and
the pods that exist, so any step may run twice, or after a restart, without duplicating a pod or re-planning.
The in-memory `JobMemo` only holds caches, expectations and the stall clocks; losing it loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference_pod.job import layout
from inference_pod.job.errors import StorageError
from inference_pod.job.plan import (
    MAX_INPUT_MANIFEST_BYTES,
    PlanError,
    PlanTooLarge,
    ShardingPolicy,
    load_plan,
    make_plan,
    manifest_key,
    parse_input_manifest,
)
from inference_pod.job.summary import write_job_summary
from ocrjob_operator import finish, metrics
from ocrjob_operator.api import rbac
from ocrjob_operator.api.client import Forbidden, Invalid, KubeError, QuotaExceeded
from ocrjob_operator.api.phases import ConditionType, Phase
from ocrjob_operator.api.spec import JobSpec, SpecError, parse_spec
from ocrjob_operator.classify import Category, parse_time
from ocrjob_operator.decide import Decision, ShardState, StallTracker, decide, infrastructure_backoff_seconds
from ocrjob_operator.observe import Expectations, Observation, PodHistory, observe
from ocrjob_operator.podspec import JobRef, build_pod, manifest_uri
from ocrjob_operator.reactions import to_planning_failure
from ocrjob_operator.status import (
    Health,
    ItemCounts,
    Observed,
    compute_status,
    status_patch,
    storage_unavailable,
    unplanned_status,
)
from ocrjob_operator.storage import CredentialsError, JobStorage, StorageFactory

log = logging.getLogger("ocrjob.controller")

POLL_SECONDS = 5.0  # resync while pods run (pod events wake the loop earlier)
IDLE_SECONDS = 300.0  # a finished job without TTL: nothing to do but notice TTL changes
SUMMARY_ATTEMPTS = 5
FINISHED = tuple(p for p in Phase if p.is_finished())
POD_FINISHED = ("Succeeded", "Failed")  # Kubernetes pod phases, not OcrJob phases

EventSink = Callable[[dict[str, Any], str, str, str], None]  # (job, type, reason, message)


@dataclass
class JobMemo:
    plan: dict[str, Any] | None = None
    stalls: StallTracker = field(default_factory=StallTracker)
    expectations: Expectations = field(default_factory=Expectations)
    history: PodHistory = field(default_factory=PodHistory)
    succeeded_in_storage: dict[int, dict[str, Any]] = field(default_factory=dict)  # shard -> its stored summary
    planning_retry_at: float = 0.0
    summary_failures: int = 0
    cleaned: bool = False


@dataclass
class Step:
    """What one step wants: the status to write (None: leave it), the seconds until the next step, and whether
    the next step follows at once in the same call (the Planning status goes out before a long listing)."""

    status: dict[str, Any] | None
    delay: float
    again: bool = False


class JobFatal(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Controller:
    def __init__(self, kube: Any, storage: StorageFactory | Any, emit: EventSink,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.storage, self.emit = kube, storage, emit
        self.clock, self.monotonic = clock, monotonic
        self._memos: dict[str, JobMemo] = {}
        self._lock = threading.Lock()

    def memo(self, uid: str) -> JobMemo:
        with self._lock:
            return self._memos.setdefault(uid, JobMemo())

    def forget(self, uid: str, namespace: str, name: str) -> None:
        with self._lock:
            self._memos.pop(uid, None)
        metrics.forget_job(namespace, name)

    # -- entry point ---------------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str) -> float | None:
        """One step (two when the first only announced planning). Returns seconds until the next step, or None
        when the job is gone."""
        job = self.kube.get_job(namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return None
        for _ in range(2):
            spec, step = self._step(job)
            if step.status is not None:
                self._write(job, step.status)
            if not step.again:
                break
        status = job.get("status") or {}
        if spec is not None and status.get("phase") in FINISHED:
            return self._finished(job, spec, status)
        return step.delay

    def _step(self, job: dict[str, Any]) -> tuple[JobSpec | None, Step]:
        status = job.get("status") or {}
        try:
            spec = parse_spec(job.get("spec") or {})
        except SpecError as exc:
            if status.get("phase") in FINISHED:
                return None, Step(None, IDLE_SECONDS)
            self.emit(job, "Warning", "InvalidSpec", str(exc))
            return None, Step(unplanned_status(Phase.FAILED, "InvalidSpec", str(exc), _generation(job), status,
                                               self.clock()), IDLE_SECONDS)
        if status.get("phase") in FINISHED:
            return spec, Step(None, IDLE_SECONDS)
        if not status.get("planLocation"):
            return spec, self._plan(job, spec)
        return spec, self._run(job, spec)

    # -- planning --------------------------------------------------------------------------------------
    def _plan(self, job: dict[str, Any], spec: JobSpec) -> Step:
        meta, status = job["metadata"], job.get("status") or {}
        memo = self.memo(meta["uid"])
        attempts = int(status.get("planningAttempts") or 0)
        if self.monotonic() < memo.planning_retry_at:
            return Step(None, memo.planning_retry_at - self.monotonic())
        if status.get("phase") != Phase.PLANNING:  # say so before a listing that may take minutes
            return Step(unplanned_status(Phase.PLANNING, "Planning", f"listing {spec.input_uri}", _generation(job),
                                         status, self.clock(), attempts), 0.0, again=True)
        started = self.monotonic()
        reading_manifest = False
        try:
            storage = self.storage.for_job(meta["namespace"], spec)
            reading_manifest = True
            manifest = (parse_input_manifest(storage.read_object(spec.input_manifest, MAX_INPUT_MANIFEST_BYTES))
                        if spec.input_manifest else None)
            reading_manifest = False
            policy = ShardingPolicy(shard_count=spec.shard_count, target_shard_bytes=spec.target_shard_bytes)
            plan = make_plan(meta["uid"], spec.input_uri, spec.output_uri, storage.source, storage.dest, policy,
                             manifest)
        except PlanTooLarge as exc:  # the operator stops holding the listing before its memory limit is near
            return self._fail_unplanned(job, "PlanTooLarge", f"planning failed: {exc}")
        except PlanError as exc:
            return self._fail_unplanned(job, "PlanFailed", f"planning failed: {exc}")
        except (StorageError, CredentialsError, KubeError) as exc:
            return self._planning_failed(job, spec, exc, attempts + 1, reading_manifest)
        seconds = self.monotonic() - started
        memo.plan = plan
        metrics.PLANNING_SECONDS.observe(plan.get("planning_seconds", seconds))
        location = storage.uri(layout.plan_key(meta["uid"]))
        self.emit(job, "Normal", "Planned",
                  f"planned {plan['shard_count']} shards ({plan['item_count']} items, {plan['total_bytes']} bytes) "
                  f"in {plan.get('planning_seconds', round(seconds, 3))}s; plan {plan['plan_id']} at {location}")
        skipped = (plan.get("skipped") or {}).get("unsupported") or {}
        if skipped.get("count"):
            self.emit(job, "Normal", "UnsupportedSkipped",
                      f"{skipped['count']} unsupported object(s) not planned, e.g. {skipped.get('examples', [])[:3]}")
        # The plan's location goes to status before any pod exists; the next step starts the shards.
        seen = observe(plan, [], spec, storage, meta["uid"], memo.expectations, memo.stalls,
                       memo.succeeded_in_storage, self.clock(), self.monotonic())
        return Step(self._status(job, spec, seen, location, Decision()), 0.0)

    def _planning_failed(self, job: dict[str, Any], spec: JobSpec, exc: StorageError | CredentialsError | KubeError,
                         attempts: int, reading_manifest: bool) -> Step:
        """A permanent error fails the job now; a transient one (storage unavailable, a Secret not readable yet)
        is retried with capped backoff for at most spec.retries.infrastructureTimeoutSeconds, counted from when
        the StorageAvailable condition turned False (kept in status, so an operator restart does not reset it)."""
        status, now = job.get("status") or {}, self.clock()
        memo = self.memo(job["metadata"]["uid"])
        if isinstance(exc, Forbidden) and spec.s3.credentials is not None:  # the namespace never granted it
            namespace = job["metadata"]["namespace"]
            return self._fail_unplanned(job, "SecretsNotGranted", (
                f"the operator may not read the Secret {namespace}/{spec.s3.credentials.name} that "
                f"spec.s3.credentialsSecret names: namespace {namespace} has not let it read its Secrets. A namespace "
                f"admin grants that with `{rbac.grant_command(namespace)}`; then create the OcrJob again"))
        text = str(exc) if not isinstance(exc, KubeError) else f"reading the Secret failed: {exc.reason}"
        reaction = None if isinstance(exc, KubeError) else to_planning_failure(exc, reading_manifest)
        if reaction is not None and reaction.fail_job:
            return self._fail_unplanned(job, reaction.reason, f"{text}; {reaction.hint}")
        since = _storage_down_since(status) or now
        if now - since > spec.infrastructure_timeout_seconds:
            return self._fail_unplanned(job, "StorageUnavailable", f"planning failed for {int(now - since)}s (more "
                                        f"than spec.retries.infrastructureTimeoutSeconds="
                                        f"{spec.infrastructure_timeout_seconds}); last error: {text}", attempts)
        delay = infrastructure_backoff_seconds(attempts)
        memo.planning_retry_at = self.monotonic() + delay
        message = (f"cannot plan yet: {text}; attempt {attempts}, retrying in {delay:g}s for up to "
                   f"{spec.infrastructure_timeout_seconds}s (spec.retries.infrastructureTimeoutSeconds)")
        self.emit(job, "Warning", "PlanningDelayed", message)
        return Step(unplanned_status(Phase.PENDING, "WaitingForStorage", message, _generation(job), status, now,
                                     attempts, Health(storage_problem=text)), delay)

    def _fail_unplanned(self, job: dict[str, Any], reason: str, message: str, attempts: int | None = None) -> Step:
        status = job.get("status") or {}
        attempts = int(status.get("planningAttempts") or 0) if attempts is None else attempts
        self.emit(job, "Warning", reason, message)
        return Step(unplanned_status(Phase.FAILED, reason, message, _generation(job), status, self.clock(), attempts),
                    IDLE_SECONDS)

    # -- running ---------------------------------------------------------------------------------------
    def _run(self, job: dict[str, Any], spec: JobSpec) -> Step:
        meta, status = job["metadata"], job.get("status") or {}
        ns, uid = meta["namespace"], meta["uid"]
        memo = self.memo(uid)
        # Observe: plan, pods (and pods created but not listed yet), stored summaries, heartbeats, stalls.
        try:
            storage = self.storage.for_job(ns, spec)
            if memo.plan is None:
                memo.plan = load_plan(storage.dest, uid)
        except (StorageError, CredentialsError) as exc:
            return self._degraded(job, f"cannot read the plan: {exc}")
        memo.history.seed(status)
        if memo.plan is None:
            return self._fail_planned(job, spec, None, "PlanLost",
                                      f"the plan {status.get('planLocation')} no longer exists; create a new OcrJob")
        recorded = status.get("planId")
        if recorded and memo.plan.get("plan_id") != recorded:  # only on storage that ignored the conditional create
            return self._fail_planned(
                job, spec, storage, "PlanConflict",
                f"the plan {status.get('planLocation')} has plan id {memo.plan.get('plan_id')}, but the job was "
                f"started on plan {recorded}: the plan was replaced (the storage did not honour the conditional "
                "create), so shards may have run on two different plans; create a new OcrJob")
        now, mono = self.clock(), self.monotonic()
        seen = observe(memo.plan, self.kube.list_job_pods(ns, uid), spec, storage, uid, memo.expectations,
                       memo.stalls, memo.succeeded_in_storage, now, mono, memo.history)
        for gone in seen.vanished:
            self.emit(job, "Warning", "PodVanished", f"shard {gone.shard}: {gone.message}")
        # Decide (pure), then act on the decision. New shard pods start only while storage answers: through an
        # outage each would fail at once.
        decision = decide(seen.states, spec, now, seen.stalled)
        if decision.create and not seen.storage_errors:
            seen.storage_errors.extend(self._probe(storage, uid))
        if decision.create and seen.storage_errors:
            decision.create = []
            seen.held = True
        try:
            note = self._act(job, spec, seen.states, decision, now)
        except JobFatal as exc:
            return self._fail_planned(job, spec, storage, exc.reason, str(exc))
        if seen.held:
            note = "; ".join(filter(None, (note, "no new shard pods start until storage answers (condition "
                                                 "StorageAvailable)")))
        if decision.outcome is not None:
            return self._finish(job, spec, storage, seen, decision)
        delay = POLL_SECONDS
        if decision.next_retry_at is not None:
            delay = min(delay, max(0.5, decision.next_retry_at - now))
        return Step(self._status(job, spec, seen, status["planLocation"], decision, note), delay)

    def _probe(self, storage: JobStorage, uid: str) -> list[str]:
        """Whether storage answers now (a HEAD of the plan); the problem when it does not."""
        try:
            storage.dest.exists(layout.plan_key(uid))
        except StorageError as exc:
            return [str(exc)]
        return []

    def _act(self, job: dict[str, Any], spec: JobSpec, states: list[ShardState], decision: Decision,
             now: float) -> str:
        """Carry out a decision; returns a note for the status message (e.g. why pods could not be created)."""
        meta = job["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        ref = JobRef(meta["name"], ns, uid)
        pods = {p.name: p for s in states for p in s.attempts}
        if decision.fatal is not None:
            self.memo(uid).history.deleted.update(decision.delete)
            for name_ in decision.delete:
                if self.kube.delete_pod(ns, name_):
                    self.emit(job, "Warning", "ShardStopped", f"stopped pod {name_}: the job fails fast because "
                              f"shard {decision.fatal.index} cannot run ({decision.fatal.reason})")
            return ""
        memo = self.memo(uid)
        memo.history.deleted.update(decision.delete)  # not "vanished" when they go
        for name_ in decision.delete:  # suspend
            if self.kube.delete_pod(ns, name_):
                self.emit(job, "Normal", "ShardSuspended", f"stopped pod {name_} (shard {pods[name_].shard}) because "
                          "spec.suspend is true; it flushes its results and the shard resumes later")
        for name_ in decision.kill:
            pod = pods[name_]
            started = pod.started_at or pod.created_at
            deadline = int(now - started) if started else 1
            if spec.shard_deadline_seconds:
                deadline = min(deadline, spec.shard_deadline_seconds)
            message = (f"its progress heartbeat stopped for more than spec.stallTimeoutSeconds="
                       f"{spec.stall_timeout_seconds}s; killed and retried (counted)")
            self.kube.kill_pod(ns, name_, "Stalled", message, deadline)
            self.emit(job, "Warning", "ShardStalled", f"killing pod {name_} (shard {pod.shard}): {message}")
        memo = self.memo(uid)
        for shard, attempt in decision.create:
            state = states[shard]
            manifest = manifest_uri(spec.output_uri, manifest_key(memo.plan or {}, shard))
            body = build_pod(ref, spec, shard, attempt, manifest)
            try:
                created = self.kube.create_pod(body)
            except (Invalid, Forbidden) as exc:
                if isinstance(exc, QuotaExceeded):  # the quota frees up as other pods finish
                    return f"cannot create pods yet: {exc}"
                raise JobFatal("PodRejected", f"the apiserver rejected shard pod {body['metadata']['name']}: "
                               f"{exc}; fix the pod settings in the OcrJob spec") from exc
            except KubeError as exc:
                return f"cannot create pods yet: {exc}"
            memo.expectations.created[body["metadata"]["name"]] = self.monotonic()
            if not created:
                continue
            latest = state.latest
            if latest is None:
                metrics.PODS_CREATED.labels("first").inc()
                self.emit(job, "Normal", "ShardStarted", f"started shard {shard} ({_items(memo, shard)} items) as pod "
                          f"{body['metadata']['name']}")
            else:
                metrics.PODS_CREATED.labels("retry").inc()
                metrics.SHARD_FAILURES.labels(latest.category.value, latest.reason).inc()
                budget = (f"retry {state.counted_failures}/{spec.retries}" if latest.counted
                          else "storage was unavailable, retry budget not spent"
                          if latest.category is Category.INFRASTRUCTURE else "disruption, retry budget not spent")
                self.emit(job, "Warning" if latest.counted else "Normal", "ShardRetried",
                          f"retrying shard {shard} as pod {body['metadata']['name']} ({budget}): previous pod "
                          f"{latest.name} {latest.reason}: {latest.message}")
        return ""

    # -- status ----------------------------------------------------------------------------------------
    def _status(self, job: dict[str, Any], spec: JobSpec, seen: Observation, location: str, decision: Decision,
                note: str = "", summary_location: str | None = None,
                stored_items: ItemCounts | None = None) -> dict[str, Any]:
        """The desired status from the observation and the decision, with the events its transitions explain."""
        status = job.get("status") or {}
        observed = Observed(generation=_generation(job), plan_location=location, plan=seen.plan, states=seen.states,
                            items=seen.items, decision=decision, now=self.clock(), suspended=spec.suspend,
                            planning_attempts=int(status.get("planningAttempts") or 0), extra_message=note,
                            pending_reasons=seen.pending_reasons, summary_location=summary_location,
                            health=seen.health, vanished_pods=self._vanished_record(job),
                            stored_items=stored_items,
                            unschedulable_timeout_seconds=spec.unschedulable_timeout_seconds)
        desired = compute_status(observed, status)
        self._events_for_transitions(job, status, desired)
        return desired

    def _vanished_record(self, job: dict[str, Any]) -> dict[str, Any] | None:
        history = self.memo(job["metadata"]["uid"]).history
        return history.record() if history.vanished_total else None

    def _events_for_transitions(self, job: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> None:
        before = {s["index"] for s in old.get("failedShards") or []}
        for shard in new.get("failedShards") or []:
            if shard["index"] not in before:
                self.emit(job, "Warning", "ShardFailed",
                          f"shard {shard['index']} failed for good: {shard['reason']}: {shard['message']}")
        if old.get("phase") != new.get("phase") and new.get("phase") in (Phase.SUSPENDED, Phase.RUNNING,
                                                                           Phase.PENDING):
            if new["phase"] == Phase.SUSPENDED:
                self.emit(job, "Normal", "Suspended", "spec.suspend is true: no new shard pods; running ones stop")
            elif old.get("phase") == Phase.SUSPENDED:
                self.emit(job, "Normal", "Resumed", "spec.suspend is false: shards continue")

    def _write(self, job: dict[str, Any], desired: dict[str, Any]) -> None:
        """The step's one status write, only of what changed."""
        meta = job["metadata"]
        patch = status_patch(job.get("status") or {}, desired)
        metrics.observe_job(meta["namespace"], meta["name"], desired)
        if patch:
            self.kube.patch_job_status(meta["namespace"], meta["name"], patch)
        job["status"] = desired

    # -- finishing -------------------------------------------------------------------------------------
    def _finish(self, job: dict[str, Any], spec: JobSpec, storage: JobStorage, seen: Observation,
                decision: Decision) -> Step:
        meta, status = job["metadata"], job.get("status") or {}
        memo = self.memo(meta["uid"])
        note, location, stored = "", None, None
        try:
            written = write_job_summary(storage.dest, meta["uid"], finish.summary_extra(meta, seen.states, decision))
            location = storage.uri(layout.job_summary_key(meta["uid"]))
            stored = ItemCounts.from_job_counts(written.get("items"))  # the final counts: storage's
        except Exception as exc:  # storage down, or a bookkeeping object a user damaged: bounded retries
            memo.summary_failures += 1
            if memo.summary_failures < SUMMARY_ATTEMPTS:
                log.warning("job summary of %s/%s not written (attempt %s): %s", meta["namespace"], meta["name"],
                            memo.summary_failures, exc)
                return Step(None, POLL_SECONDS * memo.summary_failures)
            note = f"the job summary could not be written: {exc}"
        desired = self._status(job, spec, seen, status["planLocation"], decision, note, location, stored)
        kind = "Normal" if desired["phase"] == Phase.SUCCEEDED else "Warning"
        self.emit(job, kind, desired["phase"], desired["message"] + (f"; summary at {location}" if location else ""))
        return Step(desired, IDLE_SECONDS)

    def _fail_planned(self, job: dict[str, Any], spec: JobSpec, storage: JobStorage | None, reason: str,
                      message: str) -> Step:
        """Fail a planned job outright (the apiserver rejects its pods, its plan vanished): stop its pods."""
        meta, status = job["metadata"], job.get("status") or {}
        for pod in self.kube.list_job_pods(meta["namespace"], meta["uid"]):
            if (pod.get("status") or {}).get("phase") not in POD_FINISHED:
                self.kube.delete_pod(meta["namespace"], pod["metadata"]["name"])
        desired = {**status, **unplanned_status(Phase.FAILED, reason, message, _generation(job), status, self.clock(),
                                                int(status.get("planningAttempts") or 0))}
        desired["conditions"] = [dict(c, status="True") if c["type"] == ConditionType.PLANNED else c
                                 for c in desired["conditions"]]
        if storage is not None:
            try:
                write_job_summary(storage.dest, meta["uid"], {"status": "failed", "reason": reason, "message": message})
                desired["summaryLocation"] = storage.uri(layout.job_summary_key(meta["uid"]))
            except Exception as exc:
                log.warning("job summary not written: %s", exc)
        self.emit(job, "Warning", reason, message)
        return Step(desired, IDLE_SECONDS)

    def _finished(self, job: dict[str, Any], spec: JobSpec, status: dict[str, Any]) -> float:
        """A finished job: remove finished pods per policy (once per process), then wait for its TTL."""
        meta = job["metadata"]
        memo = self.memo(meta["uid"])
        metrics.observe_job(meta["namespace"], meta["name"], status)
        if not memo.cleaned:
            self._cleanup(job, spec)
            memo.cleaned = True
        remaining = finish.ttl_remaining(spec, status, self.clock())
        if remaining is None:
            return IDLE_SECONDS
        if remaining > 0:
            return min(remaining, IDLE_SECONDS)
        self.emit(job, "Normal", "Expired", f"deleting the job {spec.ttl_seconds_after_finished}s after it finished "
                  "(spec.ttlSecondsAfterFinished)")
        self.kube.delete_job(meta["namespace"], meta["name"], meta["uid"])
        return IDLE_SECONDS

    def _cleanup(self, job: dict[str, Any], spec: JobSpec) -> None:
        meta = job["metadata"]
        names = finish.pods_to_clean(self.kube.list_job_pods(meta["namespace"], meta["uid"]), spec.pod_cleanup_policy)
        deleted = sum(bool(self.kube.delete_pod(meta["namespace"], name)) for name in names)
        if deleted:
            self.emit(job, "Normal", "PodsCleanedUp",
                      f"deleted {deleted} finished pod(s) (spec.podCleanupPolicy={spec.pod_cleanup_policy})")

    def _degraded(self, job: dict[str, Any], message: str) -> Step:
        log.warning("%s/%s: %s", job["metadata"]["namespace"], job["metadata"]["name"], message)
        return Step(storage_unavailable(job.get("status") or {}, message, self.clock()), POLL_SECONDS * 2)


def _generation(job: dict[str, Any]) -> int:
    return int(job["metadata"].get("generation") or 0)


def _storage_down_since(status: dict[str, Any]) -> float | None:
    """When the StorageAvailable condition last turned False (None while it is not False)."""
    condition = next((c for c in status.get("conditions") or [] if c.get("type") == ConditionType.STORAGE_AVAILABLE),
                     None)
    if condition is None or condition.get("status") != "False":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def _items(memo: JobMemo, shard: int) -> int | str:
    for entry in (memo.plan or {}).get("shards", []):
        if entry["index"] == shard:
            return entry["items"]
    return "?"
