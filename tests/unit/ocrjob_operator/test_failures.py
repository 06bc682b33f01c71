"""Failures that are not the shard's fault cost nothing; permanent ones fail fast; every lost pod is explained.

Storage outages (exit 74) are retried free with capped backoff, bounded in time; an unschedulable pod fails the
job after spec.scheduling.unschedulableTimeoutSeconds; a pod that disappears unfinished is counted and its
attempt number never reused; a SIGKILLed container is explained as killed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from inference_pod.job import exit_codes
from inference_pod.job.errors import InvalidRequest, ObjectNotFound, ObjectTooLarge, StorageUnavailable
from inference_pod.job.plan import MAX_INPUT_MANIFEST_BYTES
from ocrjob_operator.api.fields import (
    INFRASTRUCTURE_BACKOFF_SECONDS,
    MAX_INFRASTRUCTURE_BACKOFF_SECONDS,
    default,
)
from ocrjob_operator.api.names import pod_name
from ocrjob_operator.api.spec import parse_spec
from ocrjob_operator.classify import SIGKILL_EXIT, UNSCHEDULABLE, Category, PodOutcome, classify_pod
from ocrjob_operator.controller import Controller
from ocrjob_operator.decide import ShardPhase, decide, infrastructure_backoff_seconds, shard_state
from ocrjob_operator.observe import VANISHED, PodHistory
from ocrjob_operator.reactions import to_planning_failure
from tests.unit.ocrjob_operator.fakes import T0, iso, reasons, terminated
from tests.unit.ocrjob_operator.fakes import pod as raw_pod

NOW = 1_000_000.0


def spec(**extra: Any):
    return parse_spec({"input": {"uri": "s3://bucket/in"}, "output": {"uri": "s3://bucket/out"}, "image": "i",
                       "sharding": {"shardCount": 1}, **extra})


def outcome(attempt: int, category: Category, finished: float | None, **kw: Any) -> PodOutcome:
    return PodOutcome(name=pod_name("job", 0, attempt), shard=0, attempt=attempt, category=category,
                      reason=kw.pop("reason", category.value), message="storage down", created_at=NOW - 5000,
                      finished_at=finished, **kw)


# -- storage unavailable: free, capped backoff, bounded in time ---------------------------------------------
def test_exit_74_is_infrastructure_not_counted() -> None:
    message = json.dumps({"status": "failed", "exit_code": exit_codes.STORAGE_UNAVAILABLE, "message": "no S3"})
    out = classify_pod(raw_pod("Failed", state=terminated(exit_codes.STORAGE_UNAVAILABLE, "Error", message)), NOW)
    assert out.category is Category.INFRASTRUCTURE and out.reason == "StorageUnavailable" and not out.counted
    assert exit_codes.for_storage_error(StorageUnavailable("x")) == exit_codes.STORAGE_UNAVAILABLE


def test_infrastructure_backoff_doubles_and_caps() -> None:
    delays = [infrastructure_backoff_seconds(n) for n in range(1, 10)]
    assert delays[0] == INFRASTRUCTURE_BACKOFF_SECONDS and delays[1] == 2 * INFRASTRUCTURE_BACKOFF_SECONDS
    assert max(delays) == MAX_INFRASTRUCTURE_BACKOFF_SECONDS == delays[-1]


def test_storage_outage_retries_free_until_the_time_bound() -> None:
    s = spec(retries={"perShard": 0})
    pods = [outcome(i, Category.INFRASTRUCTURE, NOW - 100 + i) for i in range(20)]  # many failures, short time
    state = shard_state(0, pods, s, NOW)
    assert state.phase in (ShardPhase.PENDING, ShardPhase.WAITING) and state.counted_failures == 0
    assert state.retry_at == pods[-1].finished_at + MAX_INFRASTRUCTURE_BACKOFF_SECONDS
    late = NOW - 100 + s.infrastructure_timeout_seconds + 1
    failed = shard_state(0, pods, s, late)
    assert failed.phase is ShardPhase.FAILED and failed.reason == "StorageUnavailable"
    assert "infrastructureTimeoutSeconds" in failed.message


def test_a_counted_failure_ends_the_outage_streak() -> None:
    s = spec(retries={"perShard": 3})
    pods = [outcome(0, Category.INFRASTRUCTURE, NOW - 10_000), outcome(1, Category.RETRYABLE, NOW - 9000),
            outcome(2, Category.INFRASTRUCTURE, NOW - 10)]
    state = shard_state(0, pods, s, NOW)
    assert state.phase is not ShardPhase.FAILED and state.infrastructure_since == NOW - 10


# -- unschedulable --------------------------------------------------------------------------------------------
def unschedulable_pod(since: str) -> dict[str, Any]:
    return raw_pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": UNSCHEDULABLE,
                                           "lastTransitionTime": since,
                                           "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node "
                                                      "affinity/selector."}])


def test_unschedulable_fails_the_job_after_the_bound_with_the_schedulers_message() -> None:
    out = classify_pod(unschedulable_pod(iso(T0)), T0)
    assert out.category is Category.PENDING and out.unschedulable_since == T0
    s = spec(scheduling={"unschedulableTimeoutSeconds": 20})
    assert decide([shard_state(0, [out], s, T0 + 19)], s, T0 + 19).outcome is None
    state = shard_state(0, [out], s, T0 + 21)
    decision = decide([state], s, T0 + 21)
    assert decision.outcome is not None and decision.fatal is state and state.reason == "Unschedulable"
    assert "didn't match Pod's node affinity/selector" in state.message and decision.delete == [out.name]


def test_unschedulable_timeout_zero_waits_forever() -> None:
    out = classify_pod(unschedulable_pod(iso(T0)), T0)
    s = spec(scheduling={"unschedulableTimeoutSeconds": 0})
    assert shard_state(0, [out], s, T0 + 10**7).phase is ShardPhase.ACTIVE


# -- SIGKILL ----------------------------------------------------------------------------------------------------
def test_sigkill_is_explained_as_killed_not_by_the_last_log_line() -> None:
    out = classify_pod(raw_pod("Failed", state=terminated(SIGKILL_EXIT, "Error", "INFO loaded model det")), NOW)
    assert out.reason == "Killed" and "SIGKILL" in out.message and "loaded model" not in out.message
    assert out.counted
    oom = classify_pod(raw_pod("Failed", state=terminated(SIGKILL_EXIT, "OOMKilled", "")), NOW)
    assert oom.reason == "OOMKilled"


# -- vanished pods --------------------------------------------------------------------------------------------
def test_a_pod_gone_unfinished_is_a_disruption_and_its_attempt_is_not_reused() -> None:
    history = PodHistory()
    running = outcome(0, Category.RUNNING, None)
    assert history.update([running], NOW) == []
    gone = history.update([], NOW + 5)
    assert [p.name for p in gone] == [running.name] and gone[0].reason == VANISHED
    assert gone[0].category is Category.DISRUPTED and "disappeared" in gone[0].message
    state = shard_state(0, history.outcomes(set()), spec(), NOW + 10, attempt_floor=history.attempt_floors[0])
    assert state.disruptions == 1 and state.counted_failures == 0 and state.next_attempt == 1
    assert history.update([], NOW + 6) == [] and history.record()["count"] == 1


def test_pods_the_operator_deleted_or_that_finished_are_not_vanished() -> None:
    history = PodHistory()
    history.update([outcome(0, Category.RUNNING, None), outcome(1, Category.RETRYABLE, NOW)], NOW)
    history.deleted.add(pod_name("job", 0, 0))
    assert history.update([], NOW + 1) == [] and history.vanished_total == 0
    assert history.attempt_floors[0] == 2  # their names stay used anyway


def test_a_finished_pod_removed_by_someone_else_keeps_its_outcome() -> None:
    """The Eviction API deletes the pod it evicted a moment after it ends: its disruption must still explain
    and count the retry, not vanish from the shard's record (seen on the real node with `kubectl drain`)."""
    history = PodHistory()
    evicted = outcome(0, Category.DISRUPTED, NOW, reason="EvictionByEvictionAPI")
    history.update([evicted], NOW)
    assert history.update([], NOW + 2) == [] and history.vanished_total == 0  # finished: not "vanished"
    state = shard_state(0, history.outcomes(set()), spec(), NOW + 10, attempt_floor=history.attempt_floors[0])
    assert state.disruptions == 1 and state.counted_failures == 0 and state.next_attempt == 1
    assert state.latest is not None and state.latest.reason == "EvictionByEvictionAPI"


def test_vanished_pods_survive_an_operator_restart_through_status() -> None:
    history = PodHistory()
    history.update([outcome(3, Category.RUNNING, None)], NOW)
    history.update([], NOW + 1)
    fresh = PodHistory()
    fresh.seed({"vanishedPods": history.record()})
    assert fresh.vanished_total == 1 and fresh.attempt_floors[0] == 4
    assert [p.name for p in fresh.outcomes(set())] == [pod_name("job", 0, 3)]


def test_controller_counts_explains_and_does_not_reuse_a_vanished_pods_name(world) -> None:
    kube, _storage, events, clock, controller = world(sharding={"shardCount": 1})
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    first = pod_name("job", 0, 0)
    kube.run(first)
    ctl.reconcile("ns", "job")
    del kube.pods[first]  # force-deleted by someone: no Failed phase, no trace
    clock.t += 1
    ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["vanishedPods"]["count"] == 1 and status["vanishedPods"]["pods"][0]["name"] == first
    assert status["retries"] == {"counted": 0, "disruptions": 1, "storage": 0}
    assert "PodVanished" in reasons(events)
    clock.t += 5
    controller().reconcile("ns", "job")  # after a restart, too: the name is not reused
    assert kube.created[-1] == pod_name("job", 0, 1)


# -- fail fast on permanent errors ----------------------------------------------------------------------------
def test_a_missing_input_manifest_or_bucket_fails_planning_at_once() -> None:
    missing = to_planning_failure(ObjectNotFound("s3://bucket/keys.txt does not exist"), reading_manifest=True)
    assert missing.fail_job and missing.reason == "InputManifestNotFound" and "spec.input.manifest" in missing.hint
    bucket = to_planning_failure(InvalidRequest("the bucket does not exist"), reading_manifest=False)
    assert bucket.fail_job and bucket.reason == "InvalidLocation"
    assert not to_planning_failure(StorageUnavailable("down"), reading_manifest=True).fail_job


@pytest.mark.parametrize(("error", "reason"), [
    (ObjectNotFound("s3://bucket/lists/keys.txt does not exist"), "InputManifestNotFound"),
    (ObjectTooLarge("s3://bucket/lists/keys.txt has 4294967296 bytes or more"), "InputManifestTooLarge"),
])
def test_controller_fails_fast_on_a_missing_or_huge_manifest(world, error: Exception, reason: str) -> None:
    kube, storage, events, _clock, controller = world(input={"uri": "s3://bucket/in",
                                                             "manifest": "s3://bucket/lists/keys.txt"})
    bounds: list[int] = []

    def refused(uri: str, max_bytes: int) -> bytes:  # what JobStorage.read_object raises, unread
        bounds.append(max_bytes)
        raise error

    storage.read_object = refused  # type: ignore[method-assign]
    ctl: Controller = controller()
    ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["phase"] == "Failed" and reason in reasons(events)
    assert status["planningAttempts"] == 0 and bounds == [MAX_INPUT_MANIFEST_BYTES]


def test_no_shard_pod_starts_while_storage_does_not_answer(world) -> None:
    kube, storage, events, clock, controller = world(sharding={"shardCount": 2}, parallelism=1)
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    first = pod_name("job", 0, 0)
    assert kube.created == [first]
    kube.finish(first, exit_codes.STORAGE_UNAVAILABLE, at=clock.t)  # the outage, as the shard saw it
    answers = storage.dest.exists

    def down(key: str) -> bool:
        raise StorageUnavailable("cannot reach the S3 endpoint")

    storage.dest.exists = down  # type: ignore[method-assign]
    for _ in range(3):  # through the outage, retries and new shards alike wait: each would fail at once
        clock.t += 120
        ctl.reconcile("ns", "job")
    assert kube.created == [first]
    status = kube.job["status"]
    assert status["phase"] == "Running" and "no new shard pods start until storage answers" in status["message"]
    condition = next(c for c in status["conditions"] if c["type"] == "StorageAvailable")
    assert condition["status"] == "False" and "cannot reach" in condition["message"]
    storage.dest.exists = answers  # type: ignore[method-assign]
    clock.t += 1
    ctl.reconcile("ns", "job")
    assert kube.created == [first, pod_name("job", 0, 1)]
    assert kube.job["status"]["retries"] == {"counted": 0, "disruptions": 0, "storage": 1}
    retried = [m for _, r, m in events if r == "ShardRetried"]
    assert len(retried) == 1 and "storage was unavailable, retry budget not spent" in retried[0], retried


def test_storage_condition_while_the_operator_cannot_read(world) -> None:
    kube, storage, _events, clock, controller = world(sharding={"shardCount": 1})
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    kube.run(pod_name("job", 0, 0))

    def down(job_id: str, shard: int) -> dict[str, Any] | None:
        raise StorageUnavailable("cannot reach the S3 endpoint")

    storage.heartbeat = down  # type: ignore[method-assign]
    ctl.reconcile("ns", "job")
    condition = next(c for c in kube.job["status"]["conditions"] if c["type"] == "StorageAvailable")
    assert condition["status"] == "False" and "cannot reach" in condition["message"]
    del storage.heartbeat
    clock.t += 5
    ctl.reconcile("ns", "job")
    condition = next(c for c in kube.job["status"]["conditions"] if c["type"] == "StorageAvailable")
    assert condition["status"] == "True"


def test_defaults_are_declared_once() -> None:
    s = spec()
    assert s.infrastructure_timeout_seconds == default("retries.infrastructureTimeoutSeconds")
    assert s.unschedulable_timeout_seconds == default("scheduling.unschedulableTimeoutSeconds")
