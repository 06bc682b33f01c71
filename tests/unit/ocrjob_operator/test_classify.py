"""Pod failure classification: which failures are free, counted, fatal for the shard, or fatal for the job."""

from __future__ import annotations

import json

import pytest

from inference_pod.job import exit_codes, settings
from inference_pod.shard.device import NoCudaBuild, check_cuda_builds
from ocrjob_operator.classify import CONFIG_ERROR_GRACE_SECONDS, Category, classify_pod, parse_time
from tests.unit.ocrjob_operator.fakes import POD_NOW as NOW
from tests.unit.ocrjob_operator.fakes import POD_T0 as T0
from tests.unit.ocrjob_operator.fakes import pod, terminated


def test_running_and_succeeded() -> None:
    running = classify_pod(pod(state={"running": {"startedAt": T0}}), NOW)
    assert running.category is Category.RUNNING and running.active and (running.shard, running.attempt) == (2, 1)
    summary = json.dumps({"status": "succeeded", "exit_code": 0, "items": {"ok": 5, "failed": 1, "skipped": 0}})
    done = classify_pod(pod("Succeeded", state=terminated(0, "Completed", summary)), NOW)
    assert done.category is Category.SUCCEEDED and not done.active
    assert done.summary is not None and done.summary["items"]["ok"] == 5
    assert done.finished_at == parse_time("2026-01-01T00:00:50Z")


@pytest.mark.parametrize(("code", "reason", "category", "short"), [
    (exit_codes.INPUT_ERROR, "Error", Category.INPUT_ERROR, "InvalidInput"),
    (exit_codes.USAGE, "Error", Category.INPUT_ERROR, "UsageError"),
    (exit_codes.CREDENTIALS, "Error", Category.CONFIG_ERROR, "CredentialsRefused"),
    (exit_codes.INTERRUPTED, "Error", Category.DISRUPTED, "Interrupted"),
    (exit_codes.SYSTEMIC, "Error", Category.RETRYABLE, "SystemicFailure"),
    (exit_codes.DEVICE_UNAVAILABLE, "Error", Category.RETRYABLE, "DeviceUnavailable"),
    (exit_codes.DEVICE_UNSUPPORTED, "Error", Category.CONFIG_ERROR, "DeviceUnsupported"),
    (137, "OOMKilled", Category.RETRYABLE, "OOMKilled"),
    (137, "Error", Category.RETRYABLE, "Killed"),
    (exit_codes.STORAGE_UNAVAILABLE, "Error", Category.INFRASTRUCTURE, "StorageUnavailable"),
    (1, "Error", Category.RETRYABLE, "ExitCode1"),
    (128, "StartError", Category.CONFIG_ERROR, "StartError"),
])
def test_exit_codes(code: int, reason: str, category: Category, short: str) -> None:
    message = json.dumps({"status": "failed", "exit_code": code, "message": "details from the loader"})
    outcome = classify_pod(pod("Failed", state=terminated(code, reason, message)), NOW)
    assert (outcome.category, outcome.reason) == (category, short)
    assert outcome.exit_code == code and not outcome.active
    assert outcome.counted == (category is Category.RETRYABLE)


@pytest.mark.parametrize("engine", [*settings.ENGINES, None])  # None: no termination message
def test_an_image_without_cuda_fails_the_job_with_the_fix(engine: str | None) -> None:
    message = None
    if engine is not None:
        with pytest.raises(NoCudaBuild) as loader_error:  # the loader's own message, at its real length
            check_cuda_builds(engine == settings.ENGINE_ONNXRUNTIME, engine, providers=lambda: ["CPUExecutionProvider"])
        message = json.dumps({"status": "failed", "exit_code": exit_codes.DEVICE_UNSUPPORTED,
                              "message": str(loader_error.value)})
    outcome = classify_pod(pod("Failed", state=terminated(exit_codes.DEVICE_UNSUPPORTED, "Error", message)), NOW)
    assert outcome.category is Category.CONFIG_ERROR and not outcome.counted
    assert outcome.message.endswith("spec.device to cpu"), "the operator's fix must survive the length cut"


def test_oom_message_says_what_to_change() -> None:
    outcome = classify_pod(pod("Failed", state=terminated(137, "OOMKilled")), NOW)
    assert "resources.limits.memory" in outcome.message


def test_plain_text_termination_message_is_kept() -> None:
    outcome = classify_pod(pod("Failed", state=terminated(1, "Error", "Traceback ...\nKeyError: 'x'")), NOW)
    assert outcome.summary is None and "KeyError" in outcome.message


@pytest.mark.parametrize("reason", ["Evicted", "Preempting", "NodeLost", "Terminated", "UnexpectedAdmissionError"])
def test_node_side_failures_are_disruptions(reason: str) -> None:
    outcome = classify_pod(pod("Failed", reason=reason, state=terminated(137)), NOW)
    assert outcome.category is Category.DISRUPTED and not outcome.counted and outcome.reason == reason


def test_disruption_target_condition_wins_over_the_exit_code() -> None:
    cond = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
             "message": "preempted by a higher-priority pod"}]
    outcome = classify_pod(pod("Failed", conditions=cond, state=terminated(137, "Error")), NOW)
    assert (outcome.category, outcome.reason) == (Category.DISRUPTED, "PreemptionByScheduler")


def test_stall_kill_and_deadline_are_counted() -> None:
    killed = classify_pod(pod("Failed", reason="DeadlineExceeded", state=terminated(75),
                              annotations={"ocrjob.dev/kill-reason": "Stalled", "ocrjob.dev/kill-message": "no beat"}),
                          NOW)
    assert (killed.category, killed.reason, killed.message) == (Category.RETRYABLE, "Stalled", "no beat")
    deadline = classify_pod(pod("Failed", reason="DeadlineExceeded", state=terminated(75)), NOW)
    assert (deadline.category, deadline.reason) == (Category.RETRYABLE, "DeadlineExceeded")


def test_config_errors_fail_fast_after_a_short_grace() -> None:
    waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s3" not found'}}
    early = classify_pod(pod("Pending", state=waiting), parse_time(T0) + 1)  # type: ignore[operator]
    assert early.category is Category.PENDING
    late = classify_pod(pod("Pending", state=waiting), parse_time(T0) + CONFIG_ERROR_GRACE_SECONDS + 1)  # type: ignore
    assert late.category is Category.CONFIG_ERROR and 'secret "s3" not found' in late.message
    bad_name = classify_pod(pod("Pending", state={"waiting": {"reason": "InvalidImageName"}}), parse_time(T0))
    assert bad_name.category is Category.CONFIG_ERROR and "spec.image" in bad_name.message


def test_pending_terminating_and_unschedulable() -> None:
    unsched = classify_pod(pod("Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                                       "reason": "Unschedulable",
                                                       "message": "0/3 nodes: Insufficient nvidia.com/gpu"}]), NOW)
    assert unsched.category is Category.PENDING and "nvidia.com/gpu" in unsched.message and unsched.active
    terminating = classify_pod(pod(state={"running": {"startedAt": T0}}, deleting=True), NOW)
    assert terminating.category is Category.TERMINATING and terminating.active


def test_a_container_that_ended_before_the_pod_phase_did_is_still_terminating() -> None:
    """A real kubelet reports the terminated container first and the terminal phase (Succeeded, or Failed with
    reason Evicted) only after it has stopped the pod: neither retried nor taken for pending meanwhile."""
    for state in (terminated(0, "Completed"), terminated(137, "Error")):
        ending = classify_pod(pod("Running", state=state), NOW)
        assert (ending.category, ending.reason, ending.active) == (Category.TERMINATING, "ContainerExited", True)
        assert not ending.counted and ending.finished_at == parse_time("2026-01-01T00:00:50Z")
