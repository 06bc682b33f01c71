"""The Indexed Job that runs an OcrJob's shards through the Kubernetes Job controller, built by a pure function
from the OcrJob, the shard count and the plan's manifest pattern: same inputs, same Job.

One index per shard, at most `spec.parallelism` running, at most one pod per index at a time
(`podReplacementPolicy: Failed`); the pod of index i reads the manifest pattern filled in with i
(`$JOB_COMPLETION_INDEX`, inference_pod.job.layout.manifest_for_pod). The Job's podFailurePolicy says what the
operator's pod classification says (classify.EXIT_CATEGORIES), so that the Job controller retries the same way:

    a disruption (DisruptionTarget: eviction, preemption, node loss), exit 75 (SIGTERM) and exit 74 (storage
    unavailable)    Ignore: retried without counting against backoffLimitPerIndex (= spec.retries.perShard);
                    the operator bounds storage retries in time (retries.infrastructureTimeoutSeconds)
    exit 64, 65     FailIndex: the shard fails, no retry (its manifest or usage is wrong)
    exit 77, 78     FailJob: refused credentials, an image without CUDA: every shard would fail the same way
    anything else   Count: a crash, OOMKilled, SIGKILL, the pod's deadline
"""

from __future__ import annotations

from typing import Any

from ocrjob_operator.api.names import (
    ANNOTATION_MANIFEST,
    COMPLETION_INDEX_LABEL,
    CONTAINER_NAME,
    INDEX_FAILURE_COUNT_ANNOTATION,
    LABEL_KUEUE_QUEUE,
)
from ocrjob_operator.api.spec import JobSpec
from ocrjob_operator.classify import EXIT_CATEGORIES, Category
from ocrjob_operator.podspec import JobRef, ShardIdentity, owner_reference, pod_spec, shard_labels

DISRUPTION_CONDITION = "DisruptionTarget"
POLICY_ACTIONS = {  # the Job controller's action for each category an exit code can have
    Category.DISRUPTED: "Ignore",
    Category.INFRASTRUCTURE: "Ignore",
    Category.INPUT_ERROR: "FailIndex",
    Category.CONFIG_ERROR: "FailJob",
}
# The order of the rules: the first that matches decides; a disruption wins over the exit code it caused.
POLICY_ORDER = ("FailJob", "FailIndex", "Ignore")


def job_name(job: JobRef) -> str:
    """The Job's name: the OcrJob's (names of OcrJobs are short enough that the pods' hostnames,
    `<name>-<index>`, stay DNS labels: api.names.MAX_JOB_NAME)."""
    return job.name


def pod_failure_policy() -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"action": "Ignore", "onPodConditions": [{"type": DISRUPTION_CONDITION, "status": "True"}]}]
    for action in POLICY_ORDER:
        codes = sorted(code for code, category in EXIT_CATEGORIES.items() if POLICY_ACTIONS[category] == action)
        rules.append({"action": action,
                      "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": codes}})
    return {"rules": rules}


def build_job(job: JobRef, spec: JobSpec, shard_count: int, manifest_pattern: str, *,
              suspend: bool) -> dict[str, Any]:
    """The Job for an OcrJob planned into `shard_count` shards whose manifests are `manifest_pattern` (a URI with
    layout.INDEX_PLACEHOLDER for the index); `suspend` holds its pods (spec.suspend, or a queue admits it)."""
    if shard_count < 1:
        raise ValueError(f"a Job needs at least one shard, got {shard_count}")
    identity = ShardIdentity(shard=f"metadata.labels['{COMPLETION_INDEX_LABEL}']",
                             attempt=f"metadata.annotations['{INDEX_FAILURE_COUNT_ANNOTATION}']")
    labels = shard_labels(job)
    job_labels = {**labels, LABEL_KUEUE_QUEUE: spec.queue_name} if spec.queue_name else labels
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(job), "namespace": job.namespace, "labels": job_labels,
                     "annotations": {ANNOTATION_MANIFEST: manifest_pattern},
                     "ownerReferences": [owner_reference(job)]},
        "spec": {
            "completionMode": "Indexed",
            "completions": shard_count,
            "parallelism": min(spec.parallelism, shard_count),
            "backoffLimitPerIndex": spec.retries,
            "podReplacementPolicy": "Failed",  # a replacement starts once the pod it replaces has stopped
            "podFailurePolicy": pod_failure_policy(),
            "suspend": suspend,
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION_MANIFEST: manifest_pattern}},
                "spec": pod_spec(job, spec, identity, manifest_pattern),
            },
        },
    }
