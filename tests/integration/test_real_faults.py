"""Real faults on shard-shaped pods, and the operator's classification of what the real kubelet reports about
them: each pod is the operator's own `build_pod` for a parsed OcrJob spec (security context, read-only root,
emptyDir, Secret env), running a short bash script instead of the loader; the fault is a real one (a kernel OOM
kill under a memory limit, SIGKILL through containerd, the Eviction API, scheduler preemption, node-pressure
eviction by the kubelet, the kubelet stopped, the kubelet and containerd restarted, an image the node lacks,
the active deadline); `classify_pod` gets the pod exactly as the apiserver returns it.

Node-pressure eviction, node loss and the restarts stop or reconfigure the session's kubelet: they run last in
this module's order and restore it (test_real_node.py's kubelet tests do the same)."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api
from kubernetes.utils import parse_quantity

from ocrjob_operator.api.client import Client
from ocrjob_operator.api.fields import BY_PATH
from ocrjob_operator.api.names import LABEL_JOB
from ocrjob_operator.api.spec import parse_spec
from ocrjob_operator.classify import Category, PodOutcome, classify_pod
from ocrjob_operator.podspec import JobRef, build_pod
from tests.support.cluster import LocalCluster
from tests.support.nodeconfig import DEFAULT_EVICTION_HARD
from tests.support.operator_harness import ocrjob
from tests.support.procs import wait_until
from tests.support.runc import RESTRICTED_USER
from tests.support.witness import WitnessNode

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]
SECRET = "s3-credentials"  # the Secret ocrjob() names: the shard pod's env reads it
MANIFEST = "s3://bucket/out/_ocrjob/x/shards/00000.json"
SLEEP = "sleep 600"
DEADLINE_SECONDS = BY_PATH["shardDeadlineSeconds"].low  # the shortest deadline a spec may ask for


@pytest.fixture
def client(cluster: LocalCluster, namespace: str) -> Client:
    client = cluster.client()
    client.create_secret(namespace, {"metadata": {"name": SECRET},
                                     "stringData": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}})
    return client


def shard_pod(cluster: LocalCluster, namespace: str, script: str, *, image: str = "base",
              **spec: Any) -> dict[str, Any]:
    """The operator's pod for shard 0 of a CPU OcrJob with `spec` (image on the node, never pulled), running
    `script` in place of the loader."""
    name = f"fault-{secrets.token_hex(3)}"
    image_ref = cluster.real_node_image(image) if image in ("base", "python-base") else image
    body = ocrjob(name, namespace, "bucket", "http://127.0.0.1:1", image_ref, **spec)
    pod = build_pod(JobRef(name, namespace, f"uid-{name}"), parse_spec(body["spec"]), 0, 0, MANIFEST)
    pod["metadata"].pop("ownerReferences", None)  # no OcrJob exists: nothing would own it
    pod["spec"]["terminationGracePeriodSeconds"] = 5
    # The stand-in images run as root; the inference image's USER is the restricted uid (runAsNonRoot holds).
    uid, gid = RESTRICTED_USER
    pod["spec"]["securityContext"].update(runAsUser=uid, runAsGroup=gid)
    pod["spec"]["containers"][0]["command"] = ["bash", "-c", script]
    return pod


def create(client: Client, namespace: str, pod: dict[str, Any]) -> str:
    client.create_pod(namespace, pod)
    return str(pod["metadata"]["labels"][LABEL_JOB])


def observed(client: Client, namespace: str, job: str) -> dict[str, Any] | None:
    pods = client.list_pods(namespace, f"{LABEL_JOB}={job}")
    return pods[0] if pods else None


def wait_classified(client: Client, namespace: str, job: str, check: Callable[[PodOutcome], bool],
                    timeout: float = 120, what: str = "") -> PodOutcome:
    seen: list[PodOutcome] = []

    def probe() -> PodOutcome | None:
        pod = observed(client, namespace, job)
        if pod is None:
            return None
        outcome = classify_pod(pod, time.time())
        seen.append(outcome)
        return outcome if check(outcome) else None

    return wait_until(probe, timeout=timeout, interval=0.3, what=what or f"pod of {job} classified",
                      on_timeout=lambda: f"last outcomes: {seen[-3:]}")


def running(outcome: PodOutcome) -> bool:
    return outcome.category is Category.RUNNING


def ended(outcome: PodOutcome) -> bool:
    """Classified as finished: not pending, running, or still being stopped by the kubelet."""
    return not outcome.active


def final(core: CoreV1Api, namespace: str, job: str, since: str, timeout: float = 120) -> PodOutcome:
    """The pod's last status before the apiserver removed it. A deleted pod is gone a moment after it ends,
    maybe before this is called, so the watch replays every change from `since`, a resourceVersion of the pod
    read while it still ran (the DELETED event carries its last status)."""
    last: dict[str, Any] = {}
    watch = kubernetes.watch.Watch()
    for event in watch.stream(core.list_namespaced_pod, namespace, label_selector=f"{LABEL_JOB}={job}",
                              resource_version=since, timeout_seconds=int(timeout)):
        pod = event["raw_object"]
        last = pod
        if event["type"] == "DELETED" or ((pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                                          and not pod["metadata"].get("deletionTimestamp")):
            watch.stop()
            break
    assert last, f"no pod of {job} seen"
    return classify_pod(last, time.time())


def test_a_memory_limit_ends_in_a_counted_retry_that_says_oomkilled(cluster: LocalCluster, client: Client,
                                                                   namespace: str) -> None:
    hog = 'a=; while :; do a="$a$(head -c 8388608 /dev/zero | tr "\\0" x)"; done'
    job = create(client, namespace, shard_pod(cluster, namespace, hog, resources={
        "requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"memory": "48Mi"}}))
    outcome = wait_classified(client, namespace, job, ended)
    assert (outcome.category, outcome.reason, outcome.exit_code) == (Category.RETRYABLE, "OOMKilled", 137)
    assert "raise spec.resources.limits.memory" in outcome.message


def test_a_kernel_oom_kill_midway_is_oomkilled_and_a_sigkill_is_killed(cluster: LocalCluster, client: Client,
                                                                      namespace: str) -> None:
    node = cluster.real_node
    assert node is not None
    jobs = [create(client, namespace, shard_pod(cluster, namespace, SLEEP)) for _ in range(2)]
    for job in jobs:
        wait_classified(client, namespace, job, running, what=f"{job} running")
    oom, killed = (observed(client, namespace, job)["metadata"]["name"] for job in jobs)  # type: ignore[index]
    node.oom_kill(namespace, oom)
    node.sigkill(namespace, killed)
    first = wait_classified(client, namespace, jobs[0], ended)
    assert (first.category, first.reason, first.exit_code) == (Category.RETRYABLE, "OOMKilled", 137)
    second = wait_classified(client, namespace, jobs[1], ended)
    assert (second.category, second.reason, second.exit_code) == (Category.RETRYABLE, "Killed", 137)


def test_eviction_api_is_a_free_disruption(cluster: LocalCluster, client: Client, core: CoreV1Api,
                                           namespace: str) -> None:
    # The loader exits 75 on SIGTERM; so does this stand-in.
    job = create(client, namespace, shard_pod(cluster, namespace, "trap 'exit 75' TERM; sleep 600 & wait"))
    wait_classified(client, namespace, job, running)
    before = observed(client, namespace, job)
    assert before is not None
    name = before["metadata"]["name"]
    core.create_namespaced_pod_eviction(name, namespace, {"metadata": {"name": name, "namespace": namespace}})
    terminating = wait_classified(client, namespace, job, lambda o: o.category is not Category.RUNNING)
    assert terminating.category in (Category.TERMINATING, Category.DISRUPTED), terminating
    outcome = final(core, namespace, job, since=before["metadata"]["resourceVersion"])
    assert (outcome.category, outcome.reason) == (Category.DISRUPTED, "EvictionByEvictionAPI"), outcome


def test_scheduler_preemption_is_a_free_disruption(cluster: LocalCluster, client: Client, core: CoreV1Api,
                                                   namespace: str, priority_classes: tuple[str, str]) -> None:
    low, high = priority_classes
    node = core.read_node(cluster.real_node.name)  # type: ignore[union-attr]
    allocatable = parse_quantity(node.status.allocatable["cpu"])
    big = f"{int(allocatable * 700)}m"  # two of these never fit together
    job = create(client, namespace, shard_pod(cluster, namespace, "trap 'exit 75' TERM; sleep 600 & wait",
                                              priorityClassName=low, resources={"requests": {"cpu": big}}))
    wait_classified(client, namespace, job, running)
    before = observed(client, namespace, job)
    assert before is not None
    preemptor = shard_pod(cluster, namespace, "sleep 1", priorityClassName=high,
                          resources={"requests": {"cpu": big}})
    create(client, namespace, preemptor)
    outcome = final(core, namespace, job, since=before["metadata"]["resourceVersion"])
    assert (outcome.category, outcome.reason) == (Category.DISRUPTED, "PreemptionByScheduler"), outcome


def test_an_image_the_node_lacks_fails_the_job_at_once(cluster: LocalCluster, client: Client,
                                                       namespace: str) -> None:
    job = create(client, namespace, shard_pod(cluster, namespace, SLEEP, image="ocrjob/never-built:0"))
    outcome = wait_classified(client, namespace, job, lambda o: o.category is not Category.PENDING, timeout=60)
    assert (outcome.category, outcome.reason) == (Category.CONFIG_ERROR, "ErrImageNeverPull"), outcome
    assert "fix spec.image" in outcome.message


def test_the_shard_deadline_is_a_counted_retry(cluster: LocalCluster, client: Client, namespace: str) -> None:
    job = create(client, namespace, shard_pod(cluster, namespace, SLEEP, shardDeadlineSeconds=DEADLINE_SECONDS))
    outcome = wait_classified(client, namespace, job, ended)
    assert (outcome.category, outcome.reason) == (Category.RETRYABLE, "DeadlineExceeded"), outcome


# -- faults of the node's own agents: the session's kubelet is stopped or reconfigured, then restored -------------
def test_kubelet_and_containerd_restarts_leave_a_running_shard_running(cluster: LocalCluster, client: Client,
                                                                       namespace: str) -> None:
    node = cluster.real_node
    assert node is not None
    job = create(client, namespace, shard_pod(cluster, namespace, "sleep 45; echo done"))
    wait_classified(client, namespace, job, running)
    node.restart_containerd()
    node.restart_kubelet()
    assert classify_pod(observed(client, namespace, job), time.time()).category is Category.RUNNING  # type: ignore[arg-type]
    outcome = wait_classified(client, namespace, job, ended, timeout=120)
    assert outcome.category is Category.SUCCEEDED, outcome


def test_node_pressure_eviction_by_the_kubelet_is_a_free_disruption(cluster: LocalCluster, client: Client,
                                                                   core: CoreV1Api, namespace: str) -> None:
    node = cluster.real_node
    assert node is not None
    # A request that still fits the allocatable the high threshold leaves (capacity - threshold = 64Mi): the
    # restarted kubelet re-admits the pod (a larger one it rejects at once, reason OutOfmemory), then evicts it.
    job = create(client, namespace, shard_pod(cluster, namespace, SLEEP,
                                              resources={"requests": {"cpu": "100m", "memory": "16Mi"}}))
    wait_classified(client, namespace, job, running)
    capacity = parse_quantity(core.read_node(node.name).status.capacity["memory"])
    try:  # a memory.available threshold just under the machine's memory: the node is under pressure at once
        node.restart_kubelet(eviction_hard={**DEFAULT_EVICTION_HARD,
                                            "memory.available": f"{int(capacity) // 2**20 - 64}Mi"})
        outcome = wait_classified(client, namespace, job, ended, timeout=120)
    finally:
        node.restart_kubelet(eviction_hard=dict(DEFAULT_EVICTION_HARD))
    assert (outcome.category, outcome.reason) == (Category.DISRUPTED, "Evicted"), outcome
    assert "memory" in outcome.message

    def pressure_lifted() -> bool:
        conditions = {c.type: c.status for c in core.read_node(node.name).status.conditions}
        return conditions.get("MemoryPressure") == "False" and conditions.get("Ready") == "True"

    wait_until(pressure_lifted, timeout=120, what="the default thresholds to lift the memory pressure")


def test_node_loss_is_a_free_disruption_once_the_pod_is_evicted(cluster: LocalCluster, client: Client,
                                                                core: CoreV1Api, namespace: str) -> None:
    """The kubelet stops: the node controller marks the node unreachable and (after the pod's toleration of
    that, 5 s here instead of the 300 s default) the taint manager deletes the pod; the deletion completes when
    the kubelet is back, and the last status the pod had says why. A witness node stays Ready meanwhile: with
    no Ready node at all the controller evicts nothing (witness.py)."""
    node = cluster.real_node
    assert node is not None
    unreachable = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 5} for taint in ("unreachable", "not-ready")]
    job = create(client, namespace, shard_pod(cluster, namespace, "trap 'exit 75' TERM; sleep 600 & wait",
                                              tolerations=unreachable))
    wait_classified(client, namespace, job, running)
    with WitnessNode(cluster.api_client()), contextlib.ExitStack() as restore:
        node.stop_kubelet()
        restore.callback(lambda: (node.start_kubelet(), node.wait_ready(120)))
        lost = wait_classified(client, namespace, job, lambda o: o.deleting, timeout=120,
                               what="the taint manager to delete the pod")
        assert lost.category is Category.TERMINATING, lost  # still running on the lost node: not retried yet
        pod = observed(client, namespace, job)
        assert pod is not None and any(c["type"] == "DisruptionTarget" and c["reason"] == "DeletionByTaintManager"
                                       for c in pod["status"]["conditions"]), pod["status"]
    outcome = final(core, namespace, job, since=pod["metadata"]["resourceVersion"])
    assert outcome.category is Category.DISRUPTED, outcome
