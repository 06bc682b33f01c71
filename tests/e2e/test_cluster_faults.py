"""Faults the cluster makes, seen through the operator on the real node: an image the node lacks and an image
without CUDA for `device: gpu` fail the job at once; preemption by a higher-priority pod and the loss of the node
(its kubelet stopped) are retried without spending the retry budget.

test_real_faults.py checks the classification of each fault on a bare pod; here the operator reacts to it.
Node loss stops the session's kubelet and starts it again before the test ends."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import kubernetes
import pytest
from kubernetes.utils import parse_quantity

from ocrjob_operator.api.names import pod_name
from tests.support.operator_env import MIDWAY_DOCUMENTS, Env
from tests.support.procs import wait_until
from tests.support.witness import WitnessNode

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.ocr]
FAIL_FAST_SECONDS = 90  # a job that can never run fails within this, with one pod and no retries
UNREACHABLE_TOLERATION_SECONDS = 5  # instead of 300 s by default: the taint manager deletes the pod soon


def finished(env: Env, name: str, timeout: float) -> dict[str, Any]:
    return env.jobs.wait_status(name, lambda s: s.get("phase") in ("Succeeded", "Failed"), timeout, "finished")


def retried(env: Env, name: str) -> list[str]:
    return [message for reason, message in env.jobs.events(name) if reason == "ShardRetried"]


def test_an_image_the_node_lacks_and_a_cuda_less_gpu_image_fail_the_job_at_once(env: Env) -> None:
    env.upload(2, seed=81)
    noimage = env.job("noimage", retries={"perShard": 3, "backoffSeconds": 1})
    noimage["spec"]["image"] = "ocrjob/never-built:0"
    env.jobs.create(noimage)
    # The CPU image on a node with (fake) GPUs: the pod is scheduled and its loader finds no CUDA build.
    env.jobs.create(env.job("nocuda", device="gpu", retries={"perShard": 3, "backoffSeconds": 1}))
    noimage = finished(env, "noimage", FAIL_FAST_SECONDS)
    assert noimage["phase"] == "Failed", noimage
    assert "ErrImageNeverPull" in json.dumps(noimage["conditions"]) and "fix spec.image" in noimage["message"]
    nocuda = finished(env, "nocuda", FAIL_FAST_SECONDS)
    assert nocuda["phase"] == "Failed", nocuda
    assert "DeviceUnsupported" in json.dumps(nocuda["conditions"]), nocuda
    assert "CUDA" in nocuda["message"] and "spec.device to cpu" in nocuda["message"], nocuda
    for name in ("noimage", "nocuda"):  # one pod each: no retry can help
        assert [p for p in env.pods.created if p.startswith(f"{name}-")] == [pod_name(name, 0, 0)], env.pods.created
        assert env.jobs.status(name)["retries"] == {"counted": 0, "disruptions": 0, "storage": 0}


@pytest.mark.slow
def test_a_shard_preempted_by_a_higher_priority_pod_is_retried_for_free(
        env: Env, core: kubernetes.client.CoreV1Api, priority_classes: tuple[str, str]) -> None:
    low, high = priority_classes
    allocatable = parse_quantity(core.read_node(env.cluster.real_node.name).status.allocatable["cpu"])
    big = f"{int(allocatable * 600)}m"  # two of these never fit on the node together
    env.upload(MIDWAY_DOCUMENTS, seed=83)
    env.hold_midway()
    env.jobs.create(env.job("preempted", priorityClassName=low, retries={"perShard": 0, "backoffSeconds": 1},
                            resources={"requests": {"cpu": big, "memory": "1Gi"}}))
    first = pod_name("preempted", 0, 0)
    env.wait_midway("preempted", first)
    preemptor = {"metadata": {"name": "preemptor"},
                 "spec": {"priorityClassName": high, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                          "containers": [{"name": "c", "image": env.cluster.real_node_image("base"),
                                          "imagePullPolicy": "Never", "command": ["sleep", "2"],
                                          "resources": {"requests": {"cpu": big}}}]}}
    core.create_namespaced_pod(env.namespace, preemptor)
    wait_until(lambda: env.jobs.pods("preempted")[0]["metadata"].get("deletionTimestamp")
               if env.jobs.pods("preempted") else None, timeout=60, interval=0.2, what=f"{first} to be preempted")
    wait_until(lambda: first not in env.running_pods("preempted"), timeout=60, what=f"{first} to stop")
    env.gate.release()
    status = finished(env, "preempted", 300)
    assert status["phase"] == "Succeeded", status
    assert status["retries"] == {"counted": 0, "disruptions": 1, "storage": 0}
    assert [p for p in env.pods.created if p.startswith("preempted-")] == [first, pod_name("preempted", 0, 1)]
    (message,) = retried(env, "preempted")
    assert "PreemptionByScheduler" in message and "budget not spent" in message, message


@pytest.mark.slow
def test_a_lost_node_costs_its_shard_no_retry(env: Env) -> None:
    """The kubelet stops: the node controller taints the node unreachable, the taint manager deletes the shard
    pod once its toleration runs out, the deletion completes when the kubelet is back, and the operator starts
    the shard again without spending retries.perShard. A witness node keeps the zone out of full disruption."""
    node = env.cluster.real_node
    tolerations = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": UNREACHABLE_TOLERATION_SECONDS} for taint in ("unreachable", "not-ready")]
    env.upload(MIDWAY_DOCUMENTS, seed=85)
    env.hold_midway()
    env.jobs.create(env.job("nodelost", tolerations=tolerations, retries={"perShard": 0, "backoffSeconds": 1}))
    first = pod_name("nodelost", 0, 0)
    env.wait_midway("nodelost", first)
    with WitnessNode(env.cluster.api_client()), contextlib.ExitStack() as restore:
        node.stop_kubelet()
        restore.callback(lambda: (node.start_kubelet(), node.wait_ready(120)))
        wait_until(lambda: env.jobs.pods("nodelost")[0]["metadata"].get("deletionTimestamp"), timeout=120,
                   interval=0.5, what=f"the taint manager to delete {first}")
        assert env.pods.created == [first]  # still running on the lost node: not retried yet
        assert env.jobs.status("nodelost")["phase"] == "Running"
    # The kubelet is back and stops the pod; only then may the shard's held download go on (released earlier,
    # the pod could finish its documents before the kubelet's SIGTERM reaches it, and nothing would be retried).
    wait_until(lambda: first not in env.running_pods("nodelost"), timeout=120, what=f"{first} to stop")
    env.gate.release()
    status = finished(env, "nodelost", 300)
    assert status["phase"] == "Succeeded", status
    assert status["retries"] == {"counted": 0, "disruptions": 1, "storage": 0}
    assert env.pods.created == [first, pod_name("nodelost", 0, 1)]
    (message,) = retried(env, "nodelost")
    assert "budget not spent" in message and "DeletionByTaintManager" in message, message
