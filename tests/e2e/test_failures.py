"""Failures on the real control plane: an S3 outage costs nothing, permanent errors fail fast, locations that
would put results inside the input are refused, an unschedulable job fails with the scheduler's reason, and a
force-deleted or SIGKILLed shard pod is counted and explained."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

import pytest

from inference_pod.job.plan import MAX_INPUT_MANIFEST_BYTES
from ocrjob_operator.api import rbac
from ocrjob_operator.api.client import Client, KubeError
from ocrjob_operator.api.names import pod_name
from tests.support.operator_env import MIDWAY_DOCUMENTS, Env, new_operator
from tests.support.operator_harness import Jobs, grant_operator, kubectl, ocrjob
from tests.support.procs import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.ocr]
OUTAGE_SECONDS = 60
FAIL_FAST_SECONDS = 60  # a permanent error fails the job within this (it was ~12 minutes of retries)


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def failed_within(env: Env, name: str, seconds: float) -> dict[str, Any]:
    return env.jobs.wait_status(name, lambda s: s.get("phase") == "Failed", seconds, "phase Failed")


@pytest.mark.slow
def test_an_s3_outage_mid_job_costs_no_retries(env: Env, s3_server: Any) -> None:
    env.upload(MIDWAY_DOCUMENTS, seed=71)
    env.hold_midway()
    # No counted retry allowed: a shard that loses storage must not spend the budget.
    env.jobs.create(env.job("outage", retries={"perShard": 0, "backoffSeconds": 1}))
    first = pod_name("outage", 0, 0)
    env.wait_midway("outage", first)
    s3_server.stop()
    env.gate.release()
    began, seen_down = time.monotonic(), None
    try:
        while time.monotonic() - began < OUTAGE_SECONDS:
            down = condition(env.jobs.status("outage"), "StorageAvailable")
            if down.get("status") == "False":
                seen_down = seen_down or down
            assert env.jobs.status("outage").get("phase") == "Running"
            time.sleep(1)
    finally:
        s3_server.restart()
    assert seen_down is not None, "StorageAvailable was never False during the outage"
    status = env.jobs.wait_status("outage", lambda s: s.get("phase") in ("Succeeded", "Failed"), 420, "finished")
    assert status["phase"] == "Succeeded", status
    assert status["retries"]["counted"] == 0 and not status.get("failedShards")
    assert condition(status, "StorageAvailable")["status"] == "True"
    assert status["items"]["done"] == MIDWAY_DOCUMENTS


# More than the operator's memory limit in the test below: read whole, this key list would OOM-kill the operator.
HUGE_LIST_BYTES = 400 << 20
SMALL_OPERATOR_MEMORY = "320Mi"


def test_a_key_list_larger_than_the_operators_memory_fails_the_job_not_the_operator(env: Env) -> None:
    env.operator.stop()  # an operator with less memory than the key list, as an admin may run it
    env.operator = new_operator(env.cluster, env.namespace, env.tmp, memory_limit=SMALL_OPERATOR_MEMORY).start()
    huge = env.tmp / "huge-list.txt"
    line = b"in/document-with-a-long-name.png\n"
    with huge.open("wb") as out:
        for _ in range(HUGE_LIST_BYTES // (len(line) << 12) + 1):
            out.write(line * 4096)
    env.s3.upload_file(str(huge), env.bucket, "lists/huge.txt")
    env.jobs.create(env.job("hugelist", input={"uri": f"s3://{env.bucket}/in",
                                               "manifest": f"s3://{env.bucket}/lists/huge.txt"}))
    status = failed_within(env, "hugelist", FAIL_FAST_SECONDS)
    assert "InputManifestTooLarge" in json.dumps(status["conditions"]), status
    assert f"more than the {MAX_INPUT_MANIFEST_BYTES} bytes" in status["message"] and "split" in status["message"]
    assert env.operator.running() and env.operator.starts == 1  # its first instance: never OOM-killed


def test_a_namespace_that_never_granted_its_secrets_is_told_the_one_command_that_does(env: Env) -> None:
    grant_operator(env.admin_kubeconfig, env.namespace, secrets=False)  # its admin never granted them
    env.upload(1, seed=77)
    env.jobs.create(env.job("nogrant"))
    status = failed_within(env, "nogrant", FAIL_FAST_SECONDS)
    assert "SecretsNotGranted" in json.dumps(status["conditions"]), status
    command = rbac.grant_command(env.namespace)
    assert command in status["message"], status["message"]
    kubectl(env.admin_kubeconfig, *shlex.split(command)[1:])  # the namespace admin runs it
    env.jobs.create(env.job("granted"))
    env.jobs.wait_status("granted", lambda s: s.get("planLocation"), 60, "planned once granted")


@pytest.mark.parametrize(("name", "change", "reason"), [
    ("nobucket", {"input": {"uri": "s3://no-such-bucket-ocrjob/in"}}, "InvalidLocation"),
    ("nomanifest", {"input": {"uri": "s3://BUCKET/in", "manifest": "s3://BUCKET/lists/missing.txt"}},
     "InputManifestNotFound"),
])
def test_permanent_planning_errors_fail_fast(env: Env, name: str, change: dict[str, Any], reason: str) -> None:
    env.upload(1, seed=72)
    spec = {k: {kk: vv.replace("BUCKET", env.bucket) for kk, vv in v.items()} for k, v in change.items()}
    began = time.monotonic()
    env.jobs.create(env.job(name, **spec))
    status = failed_within(env, name, FAIL_FAST_SECONDS)
    assert condition(status, "Failed")["reason"] == reason, status
    assert time.monotonic() - began < FAIL_FAST_SECONDS and not env.jobs.pods(name)
    assert status["planningAttempts"] == 0


def test_an_unschedulable_job_fails_with_the_schedulers_reason(env: Env) -> None:
    env.upload(1, seed=73)
    env.jobs.create(env.job("nonode", nodeSelector={"ocrjob.dev/no-such-node": "true"},
                            scheduling={"unschedulableTimeoutSeconds": 20}))
    unschedulable = env.jobs.wait_status("nonode", lambda s: condition(s, "Unschedulable").get("status") == "True",
                                         60, "condition Unschedulable")
    assert "node" in condition(unschedulable, "Unschedulable")["message"]
    # Waiting for capacity is not running: the job says which pod, why, and when it gives up.
    assert unschedulable["phase"] == "Pending" and unschedulable["shards"]["active"] == 0, unschedulable
    assert "1 waiting for capacity: no node fits pod nonode-s0-a0" in unschedulable["message"], unschedulable
    assert "the job fails with Unschedulable at" in unschedulable["message"]
    status = failed_within(env, "nonode", 90)
    failed = condition(status, "Failed")
    assert failed["reason"] == "Unschedulable" and "didn't match" in failed["message"], failed
    wait_until(lambda: not env.jobs.pods("nonode"), timeout=60, what="its pod to be deleted")


@pytest.mark.slow
def test_a_force_deleted_pod_is_counted_explained_and_its_name_not_reused(env: Env, k8s_client: Client) -> None:
    env.upload(MIDWAY_DOCUMENTS, seed=74)
    env.hold_midway()
    env.jobs.create(env.job("vanish", retries={"perShard": 0, "backoffSeconds": 1}))
    first = pod_name("vanish", 0, 0)
    env.wait_midway("vanish", first)
    k8s_client.delete_pod(env.namespace, first, 0)  # force: no graceful stop, no Failed phase, no trace
    env.gate.release()
    status = env.jobs.wait_status("vanish", lambda s: s.get("phase") in ("Succeeded", "Failed"), 300, "finished")
    assert status["phase"] == "Succeeded", status
    assert status["vanishedPods"]["count"] == 1 and status["vanishedPods"]["pods"][0]["name"] == first
    assert status["retries"] == {"counted": 0, "disruptions": 1, "storage": 0}
    assert env.pods.created == [first, pod_name("vanish", 0, 1)]
    vanished = [m for r, m in env.jobs.events("vanish") if r == "PodVanished"]
    assert len(vanished) == 1 and first in vanished[0] and "disappeared" in vanished[0]


@pytest.mark.slow
def test_a_sigkilled_shard_is_explained_as_killed(env: Env) -> None:
    env.upload(MIDWAY_DOCUMENTS, seed=75)
    env.hold_midway()
    env.jobs.create(env.job("sigkill", retries={"perShard": 1, "backoffSeconds": 1}))
    first = pod_name("sigkill", 0, 0)
    env.wait_midway("sigkill", first)
    env.cluster.real_node.sigkill(env.namespace, first)  # every process of the container, through containerd
    env.gate.release()
    status = env.jobs.wait_status("sigkill", lambda s: s.get("phase") in ("Succeeded", "Failed"), 300, "finished")
    assert status["phase"] == "Succeeded", status
    assert status["retries"] == {"counted": 1, "disruptions": 0, "storage": 0}
    retried = [m for r, m in env.jobs.events("sigkill") if r == "ShardRetried"]
    assert len(retried) == 1 and f"{first} Killed: the container was killed (SIGKILL, exit 137)" in retried[0]


LOCATIONS = [
    ({"output": {"uri": "s3://bucket/data"}, "input": {"uri": "s3://bucket/data/in"}},
     "must not contain spec.input.uri"),
    ({"output": {"uri": "s3://bucket/"}, "input": {"uri": "s3://bucket/in"}}, "must not contain spec.input.uri"),
    ({"output": {"uri": "s3://bucket/in/"}}, "must not be spec.input.uri or lie inside it"),
    ({"input": {"uri": "s3://bucket/a/../in"}}, "must not have '.' or '..' segments"),
    ({"output": {"uri": "s3://bucket/./out"}}, "must not have '.' or '..' segments"),
    ({"output": {"uri": "s3://bucket/a//out"}}, "no empty segments"),
]


@pytest.mark.parametrize(("change", "message"), LOCATIONS, ids=[str(i) for i in range(len(LOCATIONS))])
def test_locations_that_put_results_inside_the_input_are_refused(installed: Any, k8s_client: Client,
                                                                 namespace: str, change: dict[str, Any],
                                                                 message: str) -> None:
    body = ocrjob("badloc", namespace, "bucket", "http://127.0.0.1:1")
    body["spec"].update(change)
    with pytest.raises(KubeError) as err:
        Jobs(k8s_client, namespace).create(body)
    assert err.value.status == 422 and message in err.value.message, err.value.message
