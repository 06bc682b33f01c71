"""Shard states, retry budget and backoff, parallelism, suspend, fail-fast, and the stall clock."""

from __future__ import annotations

from inference_pod.job import exit_codes
from ocrjob_operator.api.fields import MAX_BACKOFF_SECONDS
from ocrjob_operator.api.names import LABEL_ATTEMPT, LABEL_SHARD, pod_name
from ocrjob_operator.api.spec import parse_spec
from ocrjob_operator.classify import Category, PodOutcome, classify_pod
from ocrjob_operator.decide import (
    DISRUPTION_RETRY_SECONDS,
    MAX_DISRUPTIONS_PER_SHARD,
    Outcome,
    ShardPhase,
    StallTracker,
    backoff_seconds,
    decide,
    shard_state,
    shard_states,
)

NOW = 1_000_000.0


def spec(**extra):
    return parse_spec({"input": {"uri": "s3://bucket/in"}, "output": {"uri": "s3://bucket/out"}, "image": "i",
                       "sharding": {"shardCount": 4}, **extra})


def pod(shard: int, attempt: int, category: Category, reason: str = "", finished: float | None = NOW - 100,
        name: str | None = None) -> PodOutcome:
    return PodOutcome(name=name or pod_name("job", shard, attempt), shard=shard, attempt=attempt, category=category,
                      reason=reason, message=f"{reason} details", created_at=NOW - 200,
                      finished_at=None if category in (Category.RUNNING, Category.PENDING) else finished)


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_seconds(n, 10) for n in range(5)] == [0, 10, 20, 40, 80]
    assert backoff_seconds(50, 10) == MAX_BACKOFF_SECONDS


def test_fresh_shard_is_pending_with_attempt_zero() -> None:
    state = shard_state(0, [], spec(), NOW)
    assert state.phase is ShardPhase.PENDING and state.next_attempt == 0


def test_counted_failure_waits_for_backoff_then_retries_with_next_attempt() -> None:
    failed = pod(1, 0, Category.RETRYABLE, "OOMKilled", finished=NOW - 5)
    state = shard_state(1, [failed], spec(retries={"perShard": 2, "backoffSeconds": 10}), NOW)
    assert state.phase is ShardPhase.WAITING and state.retry_at == NOW + 5 and state.counted_failures == 1
    later = shard_state(1, [failed], spec(retries={"perShard": 2, "backoffSeconds": 10}), NOW + 6)
    assert later.phase is ShardPhase.PENDING and later.next_attempt == 1


def test_retry_budget_is_spent_only_by_counted_failures() -> None:
    s = spec(retries={"perShard": 1})
    pods = [pod(0, 0, Category.RETRYABLE, "SystemicFailure"), pod(0, 1, Category.DISRUPTED, "Evicted"),
            pod(0, 2, Category.DISRUPTED, "PreemptionByScheduler")]
    state = shard_state(0, pods, s, NOW)
    assert state.phase is ShardPhase.PENDING and state.counted_failures == 1 and state.disruptions == 2
    assert state.next_attempt == 3
    exhausted = shard_state(0, [*pods, pod(0, 3, Category.RETRYABLE, "OOMKilled")], s, NOW)
    assert exhausted.phase is ShardPhase.FAILED and exhausted.reason == "RetriesExhausted"
    assert "OOMKilled" in exhausted.message


def test_zero_retries_still_survives_evictions() -> None:
    state = shard_state(0, [pod(0, 0, Category.DISRUPTED, "Evicted", finished=NOW - 10)], spec(retries={"perShard": 0}),
                        NOW)
    assert state.phase is ShardPhase.PENDING
    quick = shard_state(0, [pod(0, 0, Category.DISRUPTED, "Evicted", finished=NOW)], spec(), NOW)
    assert quick.phase is ShardPhase.WAITING and quick.retry_at == NOW + DISRUPTION_RETRY_SECONDS


def test_disruptions_are_bounded_too() -> None:
    pods = [pod(0, i, Category.DISRUPTED, "Evicted") for i in range(MAX_DISRUPTIONS_PER_SHARD + 1)]
    assert shard_state(0, pods, spec(), NOW).reason == "TooManyDisruptions"


def test_input_error_is_not_retried() -> None:
    state = shard_state(2, [pod(2, 0, Category.INPUT_ERROR, "InvalidInput")], spec(retries={"perShard": 5}), NOW)
    assert state.phase is ShardPhase.FAILED and state.message.startswith("not retried")


def test_success_and_storage_success_win() -> None:
    pods = [pod(0, 0, Category.RETRYABLE, "ExitCode1"), pod(0, 1, Category.SUCCEEDED)]
    assert shard_state(0, pods, spec(), NOW).phase is ShardPhase.SUCCEEDED
    assert shard_state(0, [], spec(), NOW, succeeded_in_storage=True).phase is ShardPhase.SUCCEEDED


def test_parallelism_is_never_exceeded_and_order_is_by_index() -> None:
    s = spec(parallelism=2)
    states = shard_states(4, [pod(0, 0, Category.RUNNING)], s, NOW)
    decision = decide(states, s, NOW)
    assert decision.create == [(1, 0)]
    states = shard_states(4, [pod(0, 0, Category.RUNNING), pod(1, 0, Category.PENDING)], s, NOW)
    assert decide(states, s, NOW).create == []
    # A pod being deleted still runs: it still takes a slot.
    states = shard_states(4, [pod(0, 0, Category.TERMINATING), pod(1, 0, Category.SUCCEEDED)], s, NOW)
    assert decide(states, s, NOW).create == [(2, 0)]


def test_all_done_gives_the_outcome() -> None:
    s = spec()
    ok = shard_states(2, [pod(0, 0, Category.SUCCEEDED), pod(1, 0, Category.SUCCEEDED)], s, NOW)
    assert decide(ok, s, NOW).outcome is Outcome.SUCCEEDED
    mixed = shard_states(2, [pod(0, 0, Category.SUCCEEDED), pod(1, 0, Category.INPUT_ERROR, "InvalidInput")], s, NOW)
    assert decide(mixed, s, NOW).outcome is Outcome.FAILED
    running = shard_states(2, [pod(0, 0, Category.RUNNING), pod(1, 0, Category.INPUT_ERROR, "InvalidInput")], s, NOW)
    assert decide(running, s, NOW).outcome is None  # other shards finish first


def test_config_error_fails_the_job_fast_and_stops_the_others() -> None:
    s = spec(parallelism=3)
    states = shard_states(4, [pod(0, 0, Category.CONFIG_ERROR, "CreateContainerConfigError"),
                              pod(1, 0, Category.RUNNING), pod(2, 0, Category.PENDING)], s, NOW)
    decision = decide(states, s, NOW)
    assert decision.outcome is Outcome.FAILED and decision.fatal is not None and decision.fatal.index == 0
    assert sorted(decision.delete) == [pod_name("job", 1, 0), pod_name("job", 2, 0)] and decision.create == []


def test_an_image_without_cuda_fails_the_job_at_the_first_pod_without_spending_retries() -> None:
    s = spec(parallelism=2, retries={"perShard": 3})
    exited = {"metadata": {"name": pod_name("job", 0, 0), "labels": {LABEL_SHARD: "0", LABEL_ATTEMPT: "0"}},
              "status": {"phase": "Failed", "containerStatuses": [
                  {"state": {"terminated": {"exitCode": exit_codes.DEVICE_UNSUPPORTED, "reason": "Error"}}}]}}
    states = shard_states(2, [classify_pod(exited, NOW), pod(1, 0, Category.RUNNING)], s, NOW)
    assert states[0].phase is ShardPhase.FAILED and states[0].counted_failures == 0
    decision = decide(states, s, NOW)
    assert decision.outcome is Outcome.FAILED and decision.fatal is not None
    assert decision.fatal.reason == "DeviceUnsupported" and "spec.device to cpu" in decision.fatal.message
    assert decision.delete == [pod_name("job", 1, 0)] and decision.create == []


def test_suspend_stops_running_pods_and_starts_none() -> None:
    s = spec(parallelism=4, suspend=True)
    states = shard_states(4, [pod(0, 0, Category.RUNNING), pod(1, 0, Category.SUCCEEDED)], s, NOW)
    decision = decide(states, s, NOW)
    assert decision.create == [] and decision.delete == [pod_name("job", 0, 0)] and decision.outcome is None


def test_stalled_running_pods_are_killed() -> None:
    s = spec(parallelism=2)
    states = shard_states(4, [pod(0, 0, Category.RUNNING), pod(1, 0, Category.RUNNING)], s, NOW)
    assert decide(states, s, NOW, frozenset({pod_name("job", 1, 0)})).kill == [pod_name("job", 1, 0)]


def test_next_retry_time_is_reported() -> None:
    s = spec(retries={"backoffSeconds": 30})
    states = shard_states(1, [pod(0, 0, Category.RETRYABLE, "ExitCode1", finished=NOW - 10)], s, NOW)
    assert decide(states, s, NOW).next_retry_at == NOW + 20


def test_stall_tracker_uses_its_own_clock() -> None:
    tracker = StallTracker()
    assert tracker.observe("p", None, 0.0) == 0.0
    assert tracker.observe("p", None, 50.0) == 50.0  # no heartbeat yet: the clock runs from first sight
    assert tracker.observe("p", (1, "a"), 60.0) == 0.0
    assert tracker.observe("p", (1, "a"), 90.0) == 30.0
    assert tracker.observe("p", (2, "a"), 95.0) == 0.0
    tracker.forget_except(set())
    assert tracker.observe("p", (2, "a"), 500.0) == 0.0
