"""Status from observed state: phase, conditions (with stable transition times), counts, and change-only writes."""

from __future__ import annotations

from inference_pod.job.records import utc_iso
from ocrjob_operator.api.names import pod_name
from ocrjob_operator.api.spec import parse_spec
from ocrjob_operator.classify import Category, PodOutcome
from ocrjob_operator.decide import decide, shard_states
from ocrjob_operator.status import (
    ItemCounts,
    Observed,
    at_least,
    compute_status,
    shard_items,
    status_patch,
    unplanned_status,
)

NOW = 1_700_000_000.0
PLAN = {"shard_count": 2, "item_count": 10, "total_bytes": 1000}


def spec(**extra):
    return parse_spec({"input": {"uri": "s3://bucket/in"}, "output": {"uri": "s3://bucket/out"}, "image": "i",
                       "sharding": {"shardCount": 2}, "parallelism": 2, **extra})


def pod(shard: int, category: Category, items: dict | None = None, attempt: int = 0, reason: str = "") -> PodOutcome:
    return PodOutcome(name=pod_name("j", shard, attempt), shard=shard, attempt=attempt, category=category,
                      reason=reason, message=reason, created_at=NOW - 60, finished_at=NOW - 1,
                      summary={"items": items} if items else None)


def observe(pods, heartbeats=None, now=NOW, **spec_extra) -> Observed:
    s = spec(**spec_extra)
    states = shard_states(2, pods, s, now)
    heartbeats = heartbeats or {}
    return Observed(generation=3, plan_location="s3://bucket/out/_ocrjob/u/plan.json", plan=PLAN, states=states,
                    items={st.index: shard_items(st, heartbeats.get(st.index)) for st in states},
                    decision=decide(states, s, now), now=now, suspended=s.suspend)


def cond(status: dict, ctype: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == ctype)


def test_running_with_live_progress_from_heartbeats() -> None:
    running = pod(0, Category.RUNNING)
    beats = {0: {"pod": pod_name("j", 0, 0), "items": {"ok": 3, "failed": 1, "skipped": 0}}}
    status = compute_status(observe([running], beats), None)
    assert status["phase"] == "Running" and status["observedGeneration"] == 3
    assert status["progress"] == "4/10" and status["shardProgress"] == "0/2"
    assert status["items"] == {"total": 10, "done": 4, "ok": 3, "failed": 1, "skipped": 0}
    assert status["shards"] == {"total": 2, "pending": 1, "active": 1, "succeeded": 0, "failed": 0}
    assert cond(status, "Running")["status"] == "True" and cond(status, "Succeeded")["status"] == "False"
    assert cond(status, "Planned")["status"] == "True"
    assert "completionTime" not in status and status["startTime"] == utc_iso(NOW)


def test_heartbeat_of_an_earlier_attempt_is_ignored() -> None:
    running = pod(0, Category.RUNNING, attempt=1)
    stale = {0: {"pod": pod_name("j", 0, 0), "items": {"ok": 9}}}
    assert compute_status(observe([running], stale), None)["items"]["done"] == 0


def test_succeeded_uses_termination_summaries() -> None:
    pods = [pod(0, Category.SUCCEEDED, {"ok": 5, "failed": 0, "skipped": 0}),
            pod(1, Category.SUCCEEDED, {"ok": 3, "failed": 1, "skipped": 1})]
    status = compute_status(observe(pods), None)
    assert status["phase"] == "Succeeded" and status["progress"] == "10/10" and status["shardProgress"] == "2/2"
    assert status["items"]["failed"] == 1 and status["completionTime"] == utc_iso(NOW)
    assert cond(status, "Succeeded")["status"] == "True" and cond(status, "Running")["status"] == "False"


def test_failed_shards_are_listed_with_the_reason() -> None:
    pods = [pod(0, Category.SUCCEEDED, {"ok": 5}), pod(1, Category.INPUT_ERROR, reason="InvalidInput")]
    status = compute_status(observe(pods), None)
    assert status["phase"] == "Failed" and cond(status, "Failed")["reason"] == "ShardsFailed"
    assert status["failedShards"] == [{"index": 1, "reason": "InvalidInput", "message": "not retried: InvalidInput"}]


def test_retry_counts() -> None:
    pods = [pod(0, Category.RETRYABLE, attempt=0, reason="OOMKilled"), pod(0, Category.DISRUPTED, attempt=1),
            pod(0, Category.RUNNING, attempt=2)]
    assert compute_status(observe(pods), None)["retries"] == {"counted": 1, "disruptions": 1, "storage": 0}


def test_suspended_phase() -> None:
    status = compute_status(observe([pod(0, Category.RUNNING)], suspend=True), None)
    assert status["phase"] == "Suspended" and cond(status, "Suspended")["status"] == "True"
    assert "stopping" in status["message"]


def test_transition_times_are_kept_while_a_condition_holds() -> None:
    first = compute_status(observe([pod(0, Category.RUNNING)]), None)
    later = compute_status(observe([pod(0, Category.RUNNING)], now=NOW + 30), first)
    assert cond(later, "Running")["lastTransitionTime"] == cond(first, "Running")["lastTransitionTime"]
    assert status_patch(first, later) == {}  # nothing changed: nothing is written
    done = compute_status(observe([pod(0, Category.SUCCEEDED, {"ok": 5}), pod(1, Category.SUCCEEDED, {"ok": 5})],
                                  now=NOW + 60), later)
    assert cond(done, "Running")["lastTransitionTime"] == utc_iso(NOW + 60)
    patch = status_patch(later, done)
    assert set(patch) >= {"phase", "conditions", "progress", "completionTime"}


def test_status_patch_removes_stale_keys() -> None:
    assert status_patch({"a": 1, "b": 2}, {"a": 1}) == {"b": None}
    assert status_patch(None, {"a": 1}) == {"a": 1}


def test_unplanned_status() -> None:
    status = unplanned_status("Pending", "WaitingForStorage", "Secret missing", 1, None, NOW, 2)
    assert status["phase"] == "Pending" and status["planningAttempts"] == 2
    assert cond(status, "Planned")["status"] == "False"
    failed = unplanned_status("Failed", "PlanFailed", "no documents", 1, status, NOW)
    assert cond(failed, "Failed")["message"] == "no documents" and "completionTime" in failed


def test_item_counts() -> None:
    assert ItemCounts.from_record({"ok": 2, "failed": 1, "skipped": 3, "pending": 9}).done == 6
    assert ItemCounts.from_record(None).done == 0


def test_error_records_of_earlier_attempts_count_as_failed() -> None:
    # A resumed attempt reports what it found done as skipped, the error records among them as failed_earlier.
    assert ItemCounts.from_record({"ok": 2, "failed": 0, "skipped": 3, "failed_earlier": 1}) == ItemCounts(2, 1, 2)
    retried = pod(0, Category.SUCCEEDED, {"ok": 1, "failed": 0, "skipped": 4, "failed_earlier": 1}, attempt=1)
    first = pod(0, Category.RETRYABLE, {"ok": 3, "failed": 1, "skipped": 0}, reason="Error")
    done = pod(1, Category.SUCCEEDED, {"ok": 5, "failed": 0, "skipped": 0})
    status = compute_status(observe([first, retried, done]), None)
    assert status["items"] == {"total": 10, "done": 10, "ok": 6, "failed": 1, "skipped": 3}


def test_a_retry_that_starts_again_from_zero_does_not_make_counts_go_back() -> None:
    first = pod(0, Category.RETRYABLE, {"ok": 3, "failed": 1, "skipped": 0}, reason="Error")
    retry = pod(0, Category.RUNNING, attempt=1)
    beat = {"pod": pod_name("j", 0, 1), "items": {"ok": 0, "failed": 0, "skipped": 1, "failed_earlier": 0}}
    status = compute_status(observe([first, retry], {0: beat}), None)
    assert status["items"]["done"] == 4 and status["items"]["failed"] == 1
    beat["items"] = {"ok": 1, "failed": 0, "skipped": 4, "failed_earlier": 1}
    later = compute_status(observe([first, retry], {0: beat}), status)
    assert later["items"] == {"total": 10, "done": 5, "ok": 1, "failed": 1, "skipped": 3}


def test_counts_never_go_back_below_the_persisted_status_even_without_any_record() -> None:
    # An operator restart after the failed attempt's pod is gone: the only memory is the previous status.
    previous = {"items": {"total": 10, "done": 4, "ok": 3, "failed": 1, "skipped": 0}}
    retry = pod(0, Category.RUNNING, attempt=1)
    beat = {0: {"pod": pod_name("j", 0, 1), "items": {"ok": 0, "skipped": 2}}}
    status = compute_status(observe([retry], beat), previous)
    assert status["items"] == previous["items"] and status["progress"] == "4/10"


def test_at_least_keeps_the_most_ok_results_and_the_most_error_records() -> None:
    assert at_least() == ItemCounts()
    assert at_least(ItemCounts(3, 0, 0), ItemCounts(0, 1, 2)) == ItemCounts(3, 1, 0)
    assert at_least(ItemCounts(1, 0, 3), ItemCounts(3, 1, 0)) == ItemCounts(1, 1, 3)


def test_a_finished_job_reports_the_counts_of_its_job_summary() -> None:
    pods = [pod(0, Category.SUCCEEDED, {"ok": 5}), pod(1, Category.SUCCEEDED, {"ok": 5})]
    observed = observe(pods)
    observed.stored_items = ItemCounts.from_job_counts({"ok": 7, "failed": 2, "skipped": 1, "failed_earlier": 2})
    status = compute_status(observed, None)
    assert status["items"] == {"total": 10, "done": 10, "ok": 7, "failed": 2, "skipped": 1}


def unschedulable(shard: int, since: float) -> PodOutcome:
    return PodOutcome(name=pod_name("j", shard, 0), shard=shard, attempt=0, category=Category.PENDING,
                      reason="Unschedulable", message="0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                      created_at=since, unschedulable_since=since)


def test_a_shard_no_node_fits_is_waiting_for_capacity_and_says_when_the_job_gives_up() -> None:
    obs = observe([unschedulable(0, NOW - 30), unschedulable(1, NOW - 10)], scheduling={
        "unschedulableTimeoutSeconds": 600})
    obs.unschedulable_timeout_seconds = 600
    status = compute_status(obs, None)
    assert (status["phase"], cond(status, "Running")["status"]) == ("Pending", "False")
    assert status["shards"] == {"total": 2, "pending": 2, "active": 0, "succeeded": 0, "failed": 0}
    message = status["message"]
    assert message.startswith("0 running") and "2 waiting for capacity: no node fits pod j-s0-a0" in message
    assert "Insufficient nvidia.com/gpu" in message and message.count("Insufficient") == 1
    assert f"fails with Unschedulable at {utc_iso(NOW - 30 + 600)}" in message
    assert "unschedulableTimeoutSeconds=600" in message


def test_with_a_shard_running_the_job_runs_and_still_says_who_waits_for_capacity() -> None:
    obs = observe([pod(0, Category.RUNNING), unschedulable(1, NOW - 10)], scheduling={
        "unschedulableTimeoutSeconds": 0})
    status = compute_status(obs, None)
    assert status["phase"] == "Running" and status["shards"]["active"] == 1 and status["shards"]["pending"] == 1
    assert "1 running" in status["message"] and "1 waiting for capacity" in status["message"]
    assert "waits as long as that takes (spec.scheduling.unschedulableTimeoutSeconds=0)" in status["message"]
