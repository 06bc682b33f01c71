"""The Indexed Job builder: deterministic, owned, the shard pod's template, and a podFailurePolicy that retries
the way the operator's pod classification does."""

from __future__ import annotations

from typing import Any

import pytest

from inference_pod.job import exit_codes, layout, settings
from inference_pod.job.settings import ATTEMPT_ENV, COMPLETION_INDEX_ENV, SHARD_ENV
from ocrjob_operator.api.names import (
    COMPLETION_INDEX_LABEL,
    INDEX_FAILURE_COUNT_ANNOTATION,
    INDEX_IGNORED_FAILURE_COUNT_ANNOTATION,
    LABEL_JOB_UID,
    LABEL_KUEUE_QUEUE,
)
from ocrjob_operator.api.spec import parse_spec
from ocrjob_operator.classify import EXIT_CATEGORIES, SIGKILL_EXIT, Category, classify_pod
from ocrjob_operator.jobspec import (
    DISRUPTION_CONDITION,
    POLICY_ACTIONS,
    build_job,
    job_name,
)
from ocrjob_operator.podspec import JobRef, ShardIdentity, pod_spec

JOB = JobRef("scan-2024", "team-a", "0b8f3c7e-1111-2222-3333-444455556666")
PATTERN = f"s3://bucket/results/{layout.plan_manifest_pattern(JOB.uid, 'ab' * 8)}"
NOW = 1_800_000_000.0


def spec(**extra: Any) -> Any:
    return parse_spec({"input": {"uri": "s3://bucket/scans"}, "output": {"uri": "s3://bucket/results"},
                       "image": "reg/ocr:1", "sharding": {"shardCount": 4}, **extra})


def failed_pod(code: int, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A shard pod of index 2 whose container exited with `code`, as the apiserver returns it."""
    ended = {"exitCode": code, "reason": "Error", "startedAt": "2027-01-15T08:00:00Z",
             "finishedAt": "2027-01-15T08:00:50Z"}
    return {"metadata": {"name": "scan-2024-2-abcde", "labels": {COMPLETION_INDEX_LABEL: "2"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Failed", "conditions": conditions or [],
                       "containerStatuses": [{"name": "ocr", "state": {"terminated": ended}}]}}


def env_of(template: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in template["spec"]["containers"][0]["env"]}


def first_action(policy: dict[str, Any], pod_status: dict[str, Any]) -> str:
    """What the Job controller does with a failed pod: the first matching rule's action; Count if none."""
    conditions = {c["type"] for c in pod_status.get("conditions") or [] if c.get("status") == "True"}
    codes = [s["state"]["terminated"]["exitCode"] for s in pod_status.get("containerStatuses") or []
             if "terminated" in s["state"]]
    for rule in policy["rules"]:
        if any(c["type"] in conditions for c in rule.get("onPodConditions", [])):
            return str(rule["action"])
        on_codes = rule.get("onExitCodes")
        if on_codes and any(code in on_codes["values"] for code in codes if code):
            return str(rule["action"])
    return "Count"


def test_same_inputs_same_job_owned_by_the_ocrjob() -> None:
    s = spec(parallelism=3, retries={"perShard": 2})
    job = build_job(JOB, s, 10, PATTERN, suspend=False)
    assert job == build_job(JOB, s, 10, PATTERN, suspend=False)
    assert job["metadata"]["name"] == job_name(JOB) and job["metadata"]["namespace"] == JOB.namespace
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["uid"], owner["controller"]) == (JOB.uid, True)
    body = job["spec"]
    assert (body["completionMode"], body["completions"], body["parallelism"]) == ("Indexed", 10, 3)
    assert body["backoffLimitPerIndex"] == 2 and body["podReplacementPolicy"] == "Failed"
    assert body["suspend"] is False and build_job(JOB, s, 10, PATTERN, suspend=True)["spec"]["suspend"] is True
    assert body["template"]["metadata"]["labels"][LABEL_JOB_UID] == JOB.uid


def test_parallelism_never_exceeds_the_shards_and_an_empty_plan_has_no_job() -> None:
    assert build_job(JOB, spec(parallelism=8), 3, PATTERN, suspend=False)["spec"]["parallelism"] == 3
    with pytest.raises(ValueError, match="at least one shard"):
        build_job(JOB, spec(), 0, PATTERN, suspend=False)


def test_the_template_is_the_shard_pod_with_its_index_from_the_job_controller() -> None:
    s = spec(s3={"credentialsSecret": {"name": "s3"}}, device="gpu")
    template = build_job(JOB, s, 4, PATTERN, suspend=False)["spec"]["template"]
    env = env_of(template)
    assert env[SHARD_ENV] == {"fieldRef": {"fieldPath": f"metadata.labels['{COMPLETION_INDEX_LABEL}']"}}
    assert "fieldRef" in env[ATTEMPT_ENV]
    assert layout.INDEX_PLACEHOLDER in env["OCRJOB_MANIFEST"]
    # Everything else is the shard pod's: locked down, no token, credentials by reference, one GPU.
    identity = ShardIdentity(env[SHARD_ENV]["fieldRef"]["fieldPath"], env[ATTEMPT_ENV]["fieldRef"]["fieldPath"])
    assert template["spec"] == pod_spec(JOB, s, identity, PATTERN)
    assert template["spec"]["restartPolicy"] == "Never" and template["spec"]["automountServiceAccountToken"] is False


def test_a_queue_label_goes_on_the_job_not_on_its_pods() -> None:
    job = build_job(JOB, spec(queueName="gpu-queue"), 2, PATTERN, suspend=True)
    assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "gpu-queue"
    assert LABEL_KUEUE_QUEUE not in job["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("code", sorted({*EXIT_CATEGORIES, 1, exit_codes.SYSTEMIC, exit_codes.DEVICE_UNAVAILABLE,
                                         SIGKILL_EXIT}))
def test_the_failure_policy_retries_each_exit_code_as_the_operator_classifies_it(code: int) -> None:
    policy = build_job(JOB, spec(), 2, PATTERN, suspend=False)["spec"]["podFailurePolicy"]
    failed = failed_pod(code)
    category = classify_pod(failed, NOW).category
    assert category is EXIT_CATEGORIES.get(code, Category.RETRYABLE)
    assert first_action(policy, failed["status"]) == POLICY_ACTIONS.get(category, "Count")


def test_a_disruption_is_ignored_whatever_the_exit_code() -> None:
    policy = build_job(JOB, spec(), 2, PATTERN, suspend=False)["spec"]["podFailurePolicy"]
    evicted = failed_pod(exit_codes.INPUT_ERROR,
                         [{"type": DISRUPTION_CONDITION, "status": "True", "reason": "EvictionByEvictionAPI"}])
    assert first_action(policy, evicted["status"]) == "Ignore"


def test_a_pod_fills_in_its_index() -> None:
    assert settings.manifest_for_pod(PATTERN, "7").endswith("/shards/00007.json")
    assert settings.manifest_for_pod("s3://b/m.json", None) == "s3://b/m.json"
    for index in (None, "", "-1", "x"):
        with pytest.raises(settings.NoShardIndex, match=COMPLETION_INDEX_ENV):
            settings.manifest_for_pod(PATTERN, index)
    assert layout.plan_manifest_key("job", "ab" * 8, 3) == f"_ocrjob/job/plans/{'ab' * 8}/shards/00003.json"


def test_a_pod_the_job_controller_made_is_classified_with_its_index_and_attempt() -> None:
    pod = failed_pod(1)
    pod["metadata"]["annotations"] = {INDEX_FAILURE_COUNT_ANNOTATION: "1", INDEX_IGNORED_FAILURE_COUNT_ANNOTATION: "2"}
    outcome = classify_pod(pod, NOW)
    assert (outcome.shard, outcome.attempt, outcome.category) == (2, 3, Category.RETRYABLE)
    pod["metadata"]["annotations"] = {}  # the first pod of its index
    assert classify_pod(pod, NOW).attempt == 0
    pod["metadata"]["labels"] = {COMPLETION_INDEX_LABEL: "not-a-number"}
    assert (classify_pod(pod, NOW).shard, classify_pod(pod, NOW).attempt) == (-1, -1)
