"""The Indexed Job of an OcrJob (jobspec.build_job) under the real Job controller on the real node: each shard
pod learns its index, and the podFailurePolicy retries the loader's exit codes and disruptions the way the
operator's classification does (ignored, counted, the index failed, the whole job failed).

The pods are the builder's template running a bash stand-in for the loader (the image on the node, the
template's locked-down security context); the faults are real exits and a real Eviction."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client import BatchV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from inference_pod.job import exit_codes, layout
from inference_pod.job.settings import SHARD_ENV
from ocrjob_operator.api.names import COMPLETION_INDEX_LABEL, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION, LABEL_JOB_UID
from ocrjob_operator.api.spec import parse_spec
from ocrjob_operator.jobspec import build_job
from ocrjob_operator.podspec import JobRef
from tests.support.cluster import LocalCluster
from tests.support.procs import wait_until
from tests.support.runc import RESTRICTED_USER

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]
IGNORED_ENV = "IGNORED_FAILURES"  # the stand-in's view of the index's ignored failures (a downward-API field)
IGNORED_ANNOTATION = INDEX_IGNORED_FAILURE_COUNT_ANNOTATION


@pytest.fixture
def batch(k8s_api: kubernetes.client.ApiClient) -> BatchV1Api:
    return BatchV1Api(k8s_api)


@pytest.fixture
def jobs(batch: BatchV1Api, namespace: str) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ApiException):
            batch.delete_namespaced_job(name, namespace, propagation_policy="Background")


def indexed_job(cluster: LocalCluster, namespace: str, script: str, shards: int, **spec: Any) -> dict[str, Any]:
    """The builder's Job for a CPU OcrJob of `shards` shards with `spec`, running `script` in place of the loader
    (with $JOB_COMPLETION_INDEX, the loader's $OCRJOB_SHARD and $IGNORED_FAILURES in its environment)."""
    name = f"ix-{secrets.token_hex(3)}"
    body = parse_spec({"input": {"uri": "s3://bucket/in"}, "output": {"uri": "s3://bucket/out"},
                       "image": cluster.real_node_image("base"), "imagePullPolicy": "Never", "device": "cpu",
                       "sharding": {"shardCount": shards}, "resources": {"requests": {"cpu": "50m"}}, **spec})
    pattern = f"s3://bucket/out/{layout.plan_manifest_pattern('job', 'ab' * 8)}"
    job = build_job(JobRef(name, namespace, f"uid-{name}"), body, shards, pattern, suspend=False)
    job["metadata"].pop("ownerReferences")  # no OcrJob exists: nothing would own it
    pod = job["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 5
    uid, gid = RESTRICTED_USER  # the stand-in image runs as root; the inference image's USER is this uid
    pod["securityContext"].update(runAsUser=uid, runAsGroup=gid)
    container = pod["containers"][0]
    container["command"] = ["bash", "-c", script]
    container["env"].append({"name": IGNORED_ENV, "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{IGNORED_ANNOTATION}']"}}})
    return job


def create(batch: BatchV1Api, namespace: str, jobs: list[str], job: dict[str, Any]) -> str:
    batch.create_namespaced_job(namespace, job)
    jobs.append(job["metadata"]["name"])
    return str(job["metadata"]["name"])


def finished(batch: BatchV1Api, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    """The Job's status once it has a Complete or Failed condition."""
    def probe() -> dict[str, Any] | None:
        status = batch.read_namespaced_job_status(name, namespace).to_dict()["status"] or {}
        done = {c["type"] for c in status.get("conditions") or [] if c["status"] == "True"}
        return status if done & {"Complete", "Failed"} else None

    return wait_until(probe, timeout=timeout, interval=0.5, what=f"Job {name} to finish")


def pods_per_index(core: CoreV1Api, namespace: str, name: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for pod in core.list_namespaced_pod(namespace, label_selector=f"{LABEL_JOB_UID}=uid-{name}").items:
        index = int(pod.metadata.labels[COMPLETION_INDEX_LABEL])
        counts[index] = counts.get(index, 0) + 1
    return counts


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


# Index 0 succeeds; 1 has a bad manifest (65); 2 crashes (1); 3 is stopped by SIGTERM (75) once, then succeeds.
# Every pod first checks that the loader's shard setting is its index.
EXIT_SCRIPT = f"""[ "${SHARD_ENV}" = "$JOB_COMPLETION_INDEX" ] || exit 3
case $JOB_COMPLETION_INDEX in
  0) exit 0 ;;
  1) exit {exit_codes.INPUT_ERROR} ;;
  2) exit 1 ;;
  3) [ "${{{IGNORED_ENV}:-0}}" -ge 1 ] && exit 0; exit {exit_codes.INTERRUPTED} ;;
esac"""


def test_each_exit_code_is_retried_as_the_operator_classifies_it(cluster: LocalCluster, batch: BatchV1Api,
                                                                 core: CoreV1Api, namespace: str,
                                                                 jobs: list[str]) -> None:
    name = create(batch, namespace, jobs, indexed_job(cluster, namespace, EXIT_SCRIPT, 4, parallelism=4,
                                                      retries={"perShard": 0}))
    status = finished(batch, namespace, name)
    assert (status.get("completed_indexes"), status.get("failed_indexes")) == ("0,3", "1,2"), status
    assert condition(status, "Failed")["reason"] == "FailedIndexes", status["conditions"]
    # 65 fails its index, 1 is counted (a budget of 0), 75 is not counted: index 3 ran again.
    assert pods_per_index(core, namespace, name) == {0: 1, 1: 1, 2: 1, 3: 2}


def test_refused_credentials_fail_the_whole_job_at_once(cluster: LocalCluster, batch: BatchV1Api,
                                                        namespace: str, jobs: list[str]) -> None:
    script = f'[ "$JOB_COMPLETION_INDEX" = 0 ] && exit {exit_codes.CREDENTIALS}; sleep 600'
    name = create(batch, namespace, jobs, indexed_job(cluster, namespace, script, 2, parallelism=2,
                                                      retries={"perShard": 3}))
    status = finished(batch, namespace, name, timeout=90)
    assert condition(status, "Failed")["reason"] == "PodFailurePolicy", status["conditions"]
    assert not status.get("active"), status  # the other shard's pod is stopped, not left running


def test_an_evicted_shard_pod_is_replaced_without_spending_the_budget(cluster: LocalCluster, batch: BatchV1Api,
                                                                      core: CoreV1Api, namespace: str,
                                                                      jobs: list[str]) -> None:
    script = f"""[ "${{{IGNORED_ENV}:-0}}" -ge 1 ] && exit 0
trap 'exit {exit_codes.INTERRUPTED}' TERM; sleep 600 & wait"""
    name = create(batch, namespace, jobs, indexed_job(cluster, namespace, script, 1, retries={"perShard": 0}))
    selector = f"{LABEL_JOB_UID}=uid-{name}"

    def running_pod() -> str | None:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        return next((p.metadata.name for p in pods if p.status.phase == "Running"), None)

    first = wait_until(running_pod, timeout=90, what=f"the pod of {name} to run")
    core.create_namespaced_pod_eviction(first, namespace, {"metadata": {"name": first, "namespace": namespace}})
    status = finished(batch, namespace, name)
    # Complete with a budget of 0: the eviction was not counted. The evicted pod is gone (the Eviction API
    # deletes it); its replacement says so.
    assert condition(status, "Complete")["status"] == "True", status["conditions"]
    (replacement,) = core.list_namespaced_pod(namespace, label_selector=selector).items
    assert replacement.metadata.name != first
    assert replacement.metadata.annotations.get(IGNORED_ANNOTATION) == "1", replacement.metadata.annotations
