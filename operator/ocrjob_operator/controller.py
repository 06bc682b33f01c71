"""One reconcile step for one OcrJob: observe (job, pods, heartbeats), decide (pure), act, write status.

Called repeatedly by the job's kopf daemon, in a worker thread (it blocks on the Kubernetes and S3
clients). Idempotent: everything is derived from the plan in storage and the pods that exist, so any
step may run twice, or after a restart, without duplicating a pod or re-planning. The in-memory
`JobMemo` only holds caches and the stall clocks; losing it loses nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from inference_pod.job import layout
from inference_pod.job.plan import PlanError, ShardingPolicy, load_plan, make_plan, parse_input_manifest
from inference_pod.job.storage import StorageError
from inference_pod.job.summary import write_job_summary
from ocrjob_operator import metrics
from ocrjob_operator.api.names import parse_pod_name
from ocrjob_operator.api.phases import ConditionType, Phase
from ocrjob_operator.api.spec import JobSpec, SpecError, parse_spec
from ocrjob_operator.classify import Category, PodOutcome, classify_pod, parse_time
from ocrjob_operator.decide import Decision, ShardPhase, ShardState, StallTracker, decide, shard_states
from ocrjob_operator.podspec import JobRef, build_pod, manifest_uri
from ocrjob_operator.reactions import to_storage_failure
from ocrjob_operator.status import Observed, compute_status, shard_items, status_patch, unplanned_status
from ocrjob_operator.storage import CredentialsError, JobStorage, StorageFactory

log = logging.getLogger("ocrjob.controller")

POLL_SECONDS = 5.0  # resync while pods run (pod events wake the loop earlier)
IDLE_SECONDS = 300.0  # a finished job without TTL: nothing to do but notice TTL changes
MAX_PLANNING_ATTEMPTS = 8
PLANNING_BACKOFF = (5, 10, 20, 40, 80, 160, 300)
CREATED_GRACE_SECONDS = 30.0  # a pod we created but cannot list yet still counts against parallelism
SUMMARY_ATTEMPTS = 5
FIRST_HEARTBEAT_GRACE = 300.0  # seconds a running pod may take to write its first heartbeat
FINISHED = tuple(p for p in Phase if p.is_finished())

EventSink = Callable[[dict[str, Any], str, str, str], None]  # (job, type, reason, message)


@dataclass
class JobMemo:
    plan: dict[str, Any] | None = None
    stalls: StallTracker = field(default_factory=StallTracker)
    created: dict[str, float] = field(default_factory=dict)  # pod name -> monotonic time of creation
    succeeded_in_storage: set[int] = field(default_factory=set)
    storage_summaries: dict[int, dict[str, Any]] = field(default_factory=dict)
    planning_retry_at: float = 0.0
    summary_failures: int = 0
    cleaned: bool = False


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
        """One step. Returns seconds until the next step, or None when the job is gone."""
        job = self.kube.get_job(namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return None
        status = job.get("status") or {}
        try:
            spec = parse_spec(job.get("spec") or {})
        except SpecError as exc:
            if status.get("phase") not in FINISHED:
                self._write(job, unplanned_status(Phase.FAILED, "InvalidSpec", str(exc), _generation(job), status,
                                                  self.clock()))
                self.emit(job, "Warning", "InvalidSpec", str(exc))
            return IDLE_SECONDS
        if status.get("phase") in FINISHED:
            return self._finished(job, spec)
        if not status.get("planLocation"):
            return self._plan(job, spec)
        return self._run(job, spec)

    # -- planning --------------------------------------------------------------------------------------
    def _plan(self, job: dict[str, Any], spec: JobSpec) -> float:
        meta, status = job["metadata"], job.get("status") or {}
        memo, now = self.memo(meta["uid"]), self.clock()
        attempts = int(status.get("planningAttempts") or 0)
        if self.monotonic() < memo.planning_retry_at:
            return memo.planning_retry_at - self.monotonic()
        if status.get("phase") != Phase.PLANNING:
            self._write(job, unplanned_status(Phase.PLANNING, "Planning", f"listing {spec.input_uri}", _generation(job),
                                              status, now, attempts))
        started = self.monotonic()
        try:
            storage = self.storage.for_job(meta["namespace"], spec)
            manifest = parse_input_manifest(storage.read_object(spec.input_manifest)) if spec.input_manifest else None
            policy = ShardingPolicy(shard_count=spec.shard_count, target_shard_bytes=spec.target_shard_bytes)
            plan = make_plan(meta["uid"], spec.input_uri, spec.output_uri, storage.source, storage.dest, policy,
                             manifest)
        except PlanError as exc:
            return self._fail_unplanned(job, "PlanFailed", f"planning failed: {exc}")
        except (StorageError, CredentialsError, ApiException) as exc:
            text = str(exc) if not isinstance(exc, ApiException) else f"reading the Secret failed: {exc.reason}"
            reaction = to_storage_failure(exc) if not isinstance(exc, ApiException) else None
            if reaction is not None and reaction.fail_job:
                return self._fail_unplanned(job, reaction.reason, f"{text}; {reaction.hint}")
            attempts += 1
            if attempts >= MAX_PLANNING_ATTEMPTS:
                return self._fail_unplanned(job, "StorageUnavailable",
                                            f"planning failed {attempts} times; last error: {text}", attempts)
            delay = PLANNING_BACKOFF[min(attempts - 1, len(PLANNING_BACKOFF) - 1)]
            memo.planning_retry_at = self.monotonic() + delay
            message = f"cannot plan yet: {text}; retry {attempts}/{MAX_PLANNING_ATTEMPTS - 1} in {delay}s"
            self._write(job, unplanned_status(Phase.PENDING, "WaitingForStorage", message, _generation(job), status,
                                              self.clock(), attempts))
            self.emit(job, "Warning", "PlanningDelayed", message)
            return float(delay)
        seconds = self.monotonic() - started
        memo.plan = plan
        metrics.PLANNING_SECONDS.observe(plan.get("planning_seconds", seconds))
        location = storage.uri(layout.plan_key(meta["uid"]))
        self.emit(job, "Normal", "Planned",
                  f"planned {plan['shard_count']} shards ({plan['item_count']} items, {plan['total_bytes']} bytes) "
                  f"in {plan.get('planning_seconds', round(seconds, 3))}s; plan at {location}")
        skipped = (plan.get("skipped") or {}).get("unsupported") or {}
        if skipped.get("count"):
            self.emit(job, "Normal", "UnsupportedSkipped",
                      f"{skipped['count']} unsupported object(s) not planned, e.g. {skipped.get('examples', [])[:3]}")
        # The plan's location goes to status before any pod exists; the next step starts the shards.
        observed = self._observe(job, spec, plan, location, [], {}, Decision(), attempts)
        desired = compute_status(observed, status)
        self._events_for_transitions(job, status, desired, observed.states)
        self._write(job, desired)
        return 0.0

    def _fail_unplanned(self, job: dict[str, Any], reason: str, message: str, attempts: int | None = None) -> float:
        status = job.get("status") or {}
        attempts = int(status.get("planningAttempts") or 0) if attempts is None else attempts
        self._write(job, unplanned_status(Phase.FAILED, reason, message, _generation(job), status, self.clock(),
                                          attempts))
        self.emit(job, "Warning", reason, message)
        return IDLE_SECONDS

    # -- running ---------------------------------------------------------------------------------------
    def _load_plan(self, job: dict[str, Any], storage: JobStorage) -> dict[str, Any] | None:
        memo = self.memo(job["metadata"]["uid"])
        if memo.plan is None:
            memo.plan = load_plan(storage.dest, job["metadata"]["uid"])
        return memo.plan

    def _run(self, job: dict[str, Any], spec: JobSpec) -> float:
        meta, status = job["metadata"], job.get("status") or {}
        ns, uid = meta["namespace"], meta["uid"]
        memo = self.memo(uid)
        try:
            storage = self.storage.for_job(ns, spec)
            plan = self._load_plan(job, storage)
        except (StorageError, CredentialsError) as exc:
            return self._degraded(job, f"cannot read the plan: {exc}")
        if plan is None:
            return self._fail_planned(job, spec, None, "PlanLost",
                                      f"the plan {status.get('planLocation')} no longer exists; create a new OcrJob")
        now, mono = self.clock(), self.monotonic()
        pods = [classify_pod(p, now) for p in self.kube.list_job_pods(ns, uid)]
        listed = {p.name for p in pods}
        for name_, at in list(memo.created.items()):
            if name_ in listed or mono - at > CREATED_GRACE_SECONDS:
                del memo.created[name_]
        pods += [_created_placeholder(n, at, now, mono) for n, at in memo.created.items()]
        shard_count = int(plan["shard_count"])
        states = shard_states(shard_count, pods, spec, now, frozenset(memo.succeeded_in_storage))
        heartbeats = self._heartbeats(storage, uid, states)
        stalled = self._stalled(memo.stalls, states, heartbeats, spec, mono)
        decision = decide(states, spec, now, stalled)
        done_before = len(memo.succeeded_in_storage)
        decision = self._skip_done_in_storage(job, storage, decision, states)
        if len(memo.succeeded_in_storage) != done_before:  # count them in this step's status already
            states = shard_states(shard_count, pods, spec, now, frozenset(memo.succeeded_in_storage))
        try:
            extra = self._act(job, spec, states, decision, now)
        except JobFatal as exc:
            return self._fail_planned(job, spec, storage, exc.reason, str(exc))
        observed = self._observe(job, spec, plan, status["planLocation"], states, heartbeats, decision,
                                 int(status.get("planningAttempts") or 0))
        observed.extra_message = extra
        if decision.outcome is not None:
            return self._finish(job, spec, storage, observed, states)
        desired = compute_status(observed, status)
        self._events_for_transitions(job, status, desired, states)
        self._write(job, desired)
        delay = POLL_SECONDS
        if decision.next_retry_at is not None:
            delay = min(delay, max(0.5, decision.next_retry_at - now))
        return delay

    def _heartbeats(self, storage: JobStorage, uid: str, states: list) -> dict[int, dict[str, Any]]:
        beats: dict[int, dict[str, Any]] = {}
        for state in states:
            pod = state.active_pod
            if pod is None or pod.category is not Category.RUNNING:
                continue
            try:
                beat = storage.heartbeat(uid, state.index)
            except StorageError as exc:
                log.warning("heartbeat of shard %s unreadable: %s", state.index, exc)
                continue
            if beat is not None:
                beats[state.index] = beat
        return beats

    @staticmethod
    def _stalled(tracker: StallTracker, states: list[ShardState], heartbeats: dict[int, dict[str, Any]],
                 spec: JobSpec, mono: float) -> frozenset[str]:
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

    def _skip_done_in_storage(self, job: dict[str, Any], storage: JobStorage, decision: Decision,
                              states: list) -> Decision:
        """Before starting a shard that has no pods, check its summary: a shard finished by an earlier
        incarnation whose pods were deleted must not run again."""
        memo = self.memo(job["metadata"]["uid"])
        keep = []
        for shard, attempt in decision.create:
            if not states[shard].attempts:
                try:
                    summary = storage.shard_summary(job["metadata"]["uid"], shard)
                except StorageError:
                    summary = None
                if summary and summary.get("status") == "succeeded":
                    memo.succeeded_in_storage.add(shard)
                    memo.storage_summaries[shard] = summary
                    continue
            keep.append((shard, attempt))
        decision.create = keep
        return decision

    def _act(self, job: dict[str, Any], spec: JobSpec, states: list[ShardState], decision: Decision,
             now: float) -> str:
        """Carry out a decision; returns a note for the status message (e.g. why pods could not be created)."""
        meta = job["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        ref = JobRef(meta["name"], ns, uid)
        pods = {p.name: p for s in states for p in s.attempts}
        if decision.fatal is not None:
            for name_ in decision.delete:
                if self.kube.delete_pod(ns, name_):
                    self.emit(job, "Warning", "ShardStopped", f"stopped pod {name_}: the job fails fast because "
                              f"shard {decision.fatal.index} cannot run ({decision.fatal.reason})")
            return ""
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
        notes = []
        memo = self.memo(uid)
        for shard, attempt in decision.create:
            state = states[shard]
            manifest = manifest_uri(spec.output_uri, layout.shard_manifest_key(uid, shard))
            body = build_pod(ref, spec, shard, attempt, manifest)
            try:
                created = self.kube.create_pod(body)
            except ApiException as exc:
                text = _api_message(exc)
                if exc.status in (400, 422) or (exc.status == 403 and "exceeded quota" not in text):
                    raise JobFatal("PodRejected", f"the apiserver rejected shard pod {body['metadata']['name']}: "
                                   f"{text}; fix the pod settings in the OcrJob spec") from exc
                notes.append(f"cannot create pods yet: {text}")
                break
            memo.created[body["metadata"]["name"]] = self.monotonic()
            if not created:
                continue
            latest = state.latest
            if latest is None:
                metrics.PODS_CREATED.labels("first").inc()
                self.emit(job, "Normal", "ShardStarted", f"started shard {shard} ({_items(memo, shard)} items) as pod "
                          f"{body['metadata']['name']}")
            else:
                kind = "counted" if latest.counted else "free"
                metrics.PODS_CREATED.labels("retry").inc()
                metrics.SHARD_FAILURES.labels(latest.category.value, latest.reason).inc()
                budget = (f"retry {state.counted_failures}/{spec.retries}" if latest.counted
                          else "disruption, retry budget not spent")
                self.emit(job, "Normal" if kind == "free" else "Warning", "ShardRetried",
                          f"retrying shard {shard} as pod {body['metadata']['name']} ({budget}): previous pod "
                          f"{latest.name} {latest.reason}: {latest.message}")
        return "; ".join(notes)

    def _observe(self, job: dict[str, Any], spec: JobSpec, plan: dict[str, Any], location: str, states: list,
                 heartbeats: dict[int, dict[str, Any]], decision: Decision, planning_attempts: int) -> Observed:
        memo = self.memo(job["metadata"]["uid"])
        if not states:
            states = shard_states(int(plan["shard_count"]), [], spec, self.clock())
        items = {s.index: shard_items(s, heartbeats.get(s.index), memo.storage_summaries.get(s.index))
                 for s in states}
        pending = sorted({f"pod {p.name}: {p.reason}: {p.message}" for s in states for p in s.attempts
                          if p.category is Category.PENDING and p.message})
        return Observed(generation=_generation(job), plan_location=location, plan=plan, states=states, items=items,
                        decision=decision, now=self.clock(), suspended=spec.suspend,
                        planning_attempts=planning_attempts, pending_reasons=pending)

    def _events_for_transitions(self, job: dict[str, Any], old: dict[str, Any], new: dict[str, Any],
                                states: list) -> None:
        before = {s["index"] for s in old.get("failedShards") or []}
        for shard in new.get("failedShards") or []:
            if shard["index"] not in before:
                self.emit(job, "Warning", "ShardFailed",
                          f"shard {shard['index']} failed for good: {shard['reason']}: {shard['message']}")
        if old.get("phase") != new.get("phase") and new.get("phase") in (Phase.SUSPENDED, Phase.RUNNING):
            if new["phase"] == Phase.SUSPENDED:
                self.emit(job, "Normal", "Suspended", "spec.suspend is true: no new shard pods; running ones stop")
            elif old.get("phase") == Phase.SUSPENDED:
                self.emit(job, "Normal", "Resumed", "spec.suspend is false: shards continue")

    # -- finishing -------------------------------------------------------------------------------------
    def _finish(self, job: dict[str, Any], spec: JobSpec, storage: JobStorage, observed: Observed,
                states: list) -> float:
        meta, status = job["metadata"], job.get("status") or {}
        memo = self.memo(meta["uid"])
        extra = {
            "kubernetes": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
            # The operator's verdict (a shard that failed before writing a summary counts as failed here).
            "status": observed.decision.outcome.value.lower() if observed.decision.outcome else "incomplete",
            "failed_shards": [{"index": s.index, "reason": s.reason, "message": s.message}
                              for s in states if s.phase is ShardPhase.FAILED],
            "attempts": [
                {"shard": p.shard, "attempt": p.attempt, "pod": p.name, "node": p.node, "category": p.category.value,
                 "reason": p.reason, "exit_code": p.exit_code,
                 "seconds": round(p.finished_at - p.started_at, 3) if p.finished_at and p.started_at else None,
                 "device": (p.summary or {}).get("device")}
                for s in states for p in s.attempts],
        }
        try:
            _write_summary(storage, meta["uid"], extra)
            observed.summary_location = storage.uri(layout.job_summary_key(meta["uid"]))
        except Exception as exc:  # storage down, or a bookkeeping object a user damaged: bounded retries
            memo.summary_failures += 1
            if memo.summary_failures < SUMMARY_ATTEMPTS:
                log.warning("job summary of %s/%s not written (attempt %s): %s", meta["namespace"], meta["name"],
                            memo.summary_failures, exc)
                return POLL_SECONDS * memo.summary_failures
            observed.extra_message = f"the job summary could not be written: {exc}"
        desired = compute_status(observed, status)
        self._events_for_transitions(job, status, desired, states)
        self._write(job, desired)
        kind = "Normal" if desired["phase"] == Phase.SUCCEEDED else "Warning"
        self.emit(job, kind, desired["phase"], desired["message"] + (
            f"; summary at {observed.summary_location}" if observed.summary_location else ""))
        job = dict(job, status={**status, **desired})
        return self._finished(job, spec)

    def _fail_planned(self, job: dict[str, Any], spec: JobSpec, storage: JobStorage | None, reason: str,
                      message: str) -> float:
        """Fail a planned job outright (the apiserver rejects its pods, its plan vanished): stop its pods."""
        meta, status = job["metadata"], job.get("status") or {}
        for pod in self.kube.list_job_pods(meta["namespace"], meta["uid"]):
            phase = (pod.get("status") or {}).get("phase")
            if phase not in FINISHED:
                self.kube.delete_pod(meta["namespace"], pod["metadata"]["name"])
        desired = {**status, **unplanned_status(Phase.FAILED, reason, message, _generation(job), status, self.clock(),
                                                int(status.get("planningAttempts") or 0))}
        desired["conditions"] = [dict(c, status="True") if c["type"] == ConditionType.PLANNED else c
                                 for c in desired["conditions"]]
        if storage is not None:
            try:
                _write_summary(storage, meta["uid"], {"status": "failed", "reason": reason, "message": message})
                desired["summaryLocation"] = storage.uri(layout.job_summary_key(meta["uid"]))
            except Exception as exc:
                log.warning("job summary not written: %s", exc)
        self._write(job, desired)
        self.emit(job, "Warning", reason, message)
        return self._finished(dict(job, status=desired), spec)

    def _finished(self, job: dict[str, Any], spec: JobSpec) -> float:
        """A finished job: remove finished pods per policy (once per process), then wait for its TTL."""
        meta, status = job["metadata"], job.get("status") or {}
        memo = self.memo(meta["uid"])
        metrics.observe_job(meta["namespace"], meta["name"], status)
        if not memo.cleaned:
            self._cleanup(job, spec)
            memo.cleaned = True
        if spec.ttl_seconds_after_finished is None:
            return IDLE_SECONDS
        finished = parse_time(status.get("completionTime")) or self.clock()
        remaining = finished + spec.ttl_seconds_after_finished - self.clock()
        if remaining > 0:
            return min(remaining, IDLE_SECONDS)
        self.emit(job, "Normal", "Expired", f"deleting the job {spec.ttl_seconds_after_finished}s after it finished "
                  "(spec.ttlSecondsAfterFinished)")
        self.kube.delete_job(meta["namespace"], meta["name"], meta["uid"])
        return IDLE_SECONDS

    def _cleanup(self, job: dict[str, Any], spec: JobSpec) -> None:
        if spec.pod_cleanup_policy == "Keep":
            return
        meta = job["metadata"]
        deleted = 0
        for pod in self.kube.list_job_pods(meta["namespace"], meta["uid"]):
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded" or (spec.pod_cleanup_policy == "Delete" and phase == "Failed"):
                deleted += bool(self.kube.delete_pod(meta["namespace"], pod["metadata"]["name"]))
        if deleted:
            self.emit(job, "Normal", "PodsCleanedUp",
                      f"deleted {deleted} finished pod(s) (spec.podCleanupPolicy={spec.pod_cleanup_policy})")

    # -- helpers ---------------------------------------------------------------------------------------
    def _degraded(self, job: dict[str, Any], message: str) -> float:
        log.warning("%s/%s: %s", job["metadata"]["namespace"], job["metadata"]["name"], message)
        status = job.get("status") or {}
        if status.get("message") != message:
            self._write(job, {**status, "message": message})
        return POLL_SECONDS * 2

    def _write(self, job: dict[str, Any], desired: dict[str, Any]) -> None:
        meta = job["metadata"]
        current = job.get("status") or {}
        patch = status_patch(current, desired)
        metrics.observe_job(meta["namespace"], meta["name"], desired)
        if not patch:
            return
        self.kube.patch_job_status(meta["namespace"], meta["name"], patch)
        job["status"] = desired  # later writes in the same step compare against what was written


class JobFatal(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _write_summary(storage: JobStorage, uid: str, extra: dict[str, Any]) -> None:
    """summary.json + index.json (an unreadable shard manifest is named in the index, not fatal)."""
    write_job_summary(storage.dest, uid, extra)


def _generation(job: dict[str, Any]) -> int:
    return int(job["metadata"].get("generation") or 0)


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except ValueError:
        return str(exc.reason)


def _created_placeholder(name: str, at: float, now: float, mono: float) -> PodOutcome:
    """A pod this process created that the listing does not show yet: count it as pending."""
    parsed = parse_pod_name(name)
    assert parsed is not None, name  # this process named it (podspec.build_pod)
    return PodOutcome(name=name, shard=parsed.shard, attempt=parsed.attempt, category=Category.PENDING,
                      reason="Created", created_at=now - (mono - at))


def _items(memo: JobMemo, shard: int) -> int | str:
    for entry in (memo.plan or {}).get("shards", []):
        if entry["index"] == shard:
            return entry["items"]
    return "?"

