"""The OcrJob operator on the real control plane: installed from manifests/, running in-cluster from its image
under its ServiceAccount (RBAC for real), shard pods of the CPU inference image on the real node (kubelet +
containerd) running the real loader over real SeaweedFS S3 with real OCR on CPU; faults are real ones (a kernel
OOM kill, SIGSTOP, `kubectl drain`)."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from inference_pod.job import layout, records
from inference_pod.job.plan import manifest_key
from inference_pod.job.summary_records import IndexEntry
from ocrjob_operator.api import rbac
from ocrjob_operator.api.client import Client, KubeError
from ocrjob_operator.api.names import LABEL_JOB
from tests.support.controlplane import venv_tool
from tests.support.operator_env import MIDWAY_DOCUMENTS, Env
from tests.support.operator_harness import (
    REPO,
    Jobs,
    grant_operator,
    kubectl,
    ocrjob,
)
from tests.support.procs import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.ocr]
OPERATOR_SA = rbac.OPERATOR_USER


def words_of(record: dict[str, Any]) -> set[str]:
    return {word for page in record["pages"] for line in page["lines"] for word in line["text"].split()}


def wait_phase(env: Env, name: str, phase: str, timeout: float) -> dict[str, Any]:
    return env.jobs.wait_status(name, lambda s: s.get("phase") == phase, timeout, f"phase {phase}")


def reasons(env: Env, name: str) -> list[str]:
    return [reason for reason, _ in env.jobs.events(name)]


# -- the whole job ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_job_over_20_documents_succeeds_within_parallelism_across_an_operator_restart(env: Env) -> None:
    corpus = env.upload(20, seed=11)
    env.put("in/README.txt", b"not a document: the planner skips it")
    env.jobs.create(env.job("ocr20", sharding={"shardCount": 4}, parallelism=2))
    waiter = subprocess.Popen([venv_tool("kubectl"), "--kubeconfig", str(env.admin_kubeconfig), "-n", env.namespace,
                               "wait", "--for=condition=Succeeded", "ocrjob/ocr20", "--timeout=600s"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        planned = env.jobs.wait_status("ocr20", lambda s: s.get("planLocation"), 60, "a plan location")
        uid = env.jobs.get("ocr20")["metadata"]["uid"]
        assert planned["planLocation"] == f"s3://{env.bucket}/out/{layout.plan_key(uid)}"
        plan = env.result(f"out/{layout.plan_key(uid)}")
        assert plan["shard_count"] == 4 and plan["item_count"] == 20 and plan["skipped"]["unsupported"]["count"] == 1

        # Kill the operator (SIGKILL) while two shard pods run; a new one must carry on without duplicates.
        wait_until(lambda: len(env.running_pods("ocr20")) == 2, timeout=120, what="two running shard pods")
        env.operator.kill()
        time.sleep(3)
        env.operator.start()

        status = wait_phase(env, "ocr20", "Succeeded", timeout=540)
        out, _ = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, out
    finally:
        if waiter.poll() is None:
            waiter.kill()
    # Exactly one pod per shard, never more than `parallelism` at once, restart or not.
    assert sorted(env.pods.created) == [f"ocr20-s{i}-a0" for i in range(4)]
    assert env.pods.max_active["ocr20"] == 2
    assert status["items"] == {"total": 20, "done": 20, "ok": 20, "failed": 0, "skipped": 0}
    assert status["progress"] == "20/20" and status["shardProgress"] == "4/4"
    assert status["shards"]["succeeded"] == 4 and status["retries"] == {"counted": 0, "disruptions": 0, "storage": 0}
    assert status["observedGeneration"] == 1 and status["startTime"] and status["completionTime"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Planned": "True", "Running": "False", "Suspended": "False", "Succeeded": "True",
                          "Failed": "False", "StorageAvailable": "True", "Unschedulable": "False"}
    # Results: every document's known words were recognised.
    for name, words in corpus.items():
        record = env.result(f"out/{layout.result_key(name)}")
        assert record["status"] == "ok" and set(words) <= words_of(record), (name, record["text"])
    summary = env.result(f"out/{layout.job_summary_key(uid)}")
    assert status["summaryLocation"] == f"s3://{env.bucket}/out/{layout.job_summary_key(uid)}"
    assert summary["status"] == "succeeded" and summary["items"]["ok"] == 20 and summary["failed_items"] == []
    assert [s["status"] for s in summary["shards"]] == ["succeeded"] * 4
    assert all(s["devices"] and s["seconds"] for s in summary["shards"])
    index = env.result(f"out/{layout.job_index_key(uid)}")
    sources = [entry.source for part in index["parts"] for entry in records.decode_lines(
        env.s3.get_object(Bucket=env.bucket, Key=f"out/{part['key']}")["Body"].read(), IndexEntry)]
    assert sorted(sources) == sorted(corpus) and index["entries"] == len(corpus)
    events = reasons(env, "ocr20")
    assert events.index("Planned") < events.index("ShardStarted")
    assert events.count("ShardStarted") == 4 and "Succeeded" in events
    # podCleanupPolicy DeleteSucceeded: the finished pods are removed.
    wait_until(lambda: not env.jobs.pods("ocr20"), timeout=30, what="succeeded pods to be cleaned up")
    assert 'ocrjob_jobs{phase="Succeeded"} 1.0' in env.operator.metrics()
    printed = kubectl(env.admin_kubeconfig, "-n", env.namespace, "get", "ocr", "ocr20").stdout
    assert "Succeeded" in printed and "20/20" in printed and "4/4" in printed


# -- faults ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_shard_pod_killed_midway_is_retried_and_resumes(env: Env) -> None:
    corpus = env.upload(MIDWAY_DOCUMENTS, seed=21)
    env.hold_midway()
    env.jobs.create(env.job("killed", retries={"perShard": 1, "backoffSeconds": 1}))
    uid = env.jobs.wait_status("killed", lambda s: s.get("planLocation"), 60, "planned") and \
        env.jobs.get("killed")["metadata"]["uid"]

    env.wait_midway("killed", "killed-s0-a0")
    env.cluster.real_node.oom_kill(env.namespace, "killed-s0-a0")
    env.gate.release()
    status = wait_phase(env, "killed", "Succeeded", timeout=240)
    assert env.pods.created == ["killed-s0-a0", "killed-s0-a1"]
    assert status["retries"] == {"counted": 1, "disruptions": 0, "storage": 0}
    retried = [m for r, m in env.jobs.events("killed") if r == "ShardRetried"]
    assert len(retried) == 1 and "OOMKilled" in retried[0] and "retry 1/1" in retried[0]
    shard = env.result(f"out/{layout.shard_summary_key(uid, 0)}")
    assert shard["attempt"] == "1" and shard["items"]["skipped"] >= 1  # resumed: earlier results kept
    assert shard["items"]["ok"] + shard["items"]["skipped"] == MIDWAY_DOCUMENTS
    for name, words in corpus.items():
        assert set(words) <= words_of(env.result(f"out/{layout.result_key(name)}"))


@pytest.mark.slow
def test_stalled_shard_is_killed_and_retried(env: Env) -> None:
    corpus = env.upload(3, seed=71)
    env.jobs.create(env.job("stalled", stallTimeoutSeconds=10, retries={"perShard": 1, "backoffSeconds": 1}))
    env.jobs.wait_status("stalled", lambda s: s.get("planLocation"), 60, "planned")
    wait_until(lambda: (env.heartbeat("stalled") or {}).get("pod") == "stalled-s0-a0", timeout=120,
               what="the first heartbeat of stalled-s0-a0")
    # Every process of the container stops: no heartbeat, no progress, no exit.
    env.cluster.real_node.signal_container(env.namespace, "stalled-s0-a0", signal="SIGSTOP")
    status = wait_phase(env, "stalled", "Succeeded", timeout=240)
    assert env.pods.created == ["stalled-s0-a0", "stalled-s0-a1"]
    assert status["retries"] == {"counted": 1, "disruptions": 0, "storage": 0}
    events = env.jobs.events("stalled")
    assert any(r == "ShardStalled" and "stalled-s0-a0" in m for r, m in events)
    assert any(r == "ShardRetried" and "Stalled" in m for r, m in events)
    for name, words in corpus.items():
        assert set(words) <= words_of(env.result(f"out/{layout.result_key(name)}"))


@pytest.mark.slow
def test_a_drained_node_does_not_spend_the_retry_budget(env: Env) -> None:
    env.upload(MIDWAY_DOCUMENTS, seed=31)
    env.hold_midway()
    env.jobs.create(env.job("evicted", retries={"perShard": 0}))
    env.wait_midway("evicted", "evicted-s0-a0")
    node = env.cluster.real_node.name
    try:  # as an admin drains a node for maintenance: cordon, then the Eviction API for its pods
        with ThreadPoolExecutor(1) as pool:
            drain = pool.submit(kubectl, env.admin_kubeconfig, "drain", node, "--pod-selector",
                                f"{LABEL_JOB}=evicted", "--delete-emptydir-data", "--ignore-daemonsets",
                                "--timeout=120s", timeout=150)
            # Once the eviction is accepted the shard may go on (it stops within its grace period either way).
            wait_until(lambda: env.jobs.pods("evicted")[0]["metadata"].get("deletionTimestamp"), timeout=120,
                       interval=0.2, what="the eviction of evicted-s0-a0")
            env.gate.release()
            drain.result()
        wait_until(lambda: "evicted-s0-a1" in env.pods.created, timeout=60, what="the retry pod")
        assert env.jobs.pods("evicted")[0]["status"]["phase"] == "Pending"  # the node is cordoned
    finally:
        kubectl(env.admin_kubeconfig, "uncordon", node)
    status = wait_phase(env, "evicted", "Succeeded", timeout=180)
    assert env.pods.created == ["evicted-s0-a0", "evicted-s0-a1"]
    assert status["retries"] == {"counted": 0, "disruptions": 1, "storage": 0}
    retried = [m for r, m in env.jobs.events("evicted") if r == "ShardRetried"]
    assert len(retried) == 1 and "budget not spent" in retried[0] and "Eviction" in retried[0], retried


@pytest.mark.slow
def test_input_error_shard_is_not_retried_and_suspend_resumes(env: Env) -> None:
    env.upload(4, seed=41)
    env.jobs.create(env.job("badinput", sharding={"shardCount": 2}, parallelism=2, suspend=True,
                            retries={"perShard": 3, "backoffSeconds": 1}))
    status = wait_phase(env, "badinput", "Suspended", timeout=60)
    assert status["planLocation"]  # suspended jobs are planned, but start no pods
    time.sleep(3)
    assert env.pods.created == []
    uid = env.jobs.get("badinput")["metadata"]["uid"]
    plan = env.result(f"out/{layout.plan_key(uid)}")
    env.put(f"out/{manifest_key(plan, 1)}", b"{ this is not a shard manifest")
    env.jobs.patch("badinput", {"spec": {"suspend": False}})
    status = wait_phase(env, "badinput", "Failed", timeout=180)
    assert sorted(env.pods.created) == ["badinput-s0-a0", "badinput-s1-a0"]  # shard 1 was not retried
    assert status["shards"]["succeeded"] == 1 and status["shards"]["failed"] == 1
    (failed,) = status["failedShards"]
    assert failed["index"] == 1 and failed["reason"] == "InvalidInput" and "not valid JSON" in failed["message"]
    kubectl(env.admin_kubeconfig, "-n", env.namespace, "wait", "--for=condition=Failed", "ocrjob/badinput",
            "--timeout=10s")
    assert {"Suspended", "Resumed", "ShardFailed"} <= set(reasons(env, "badinput"))
    assert env.result(f"out/{layout.job_summary_key(uid)}")["status"] == "failed"


def test_configuration_errors_fail_the_job_fast_with_the_reason(env: Env) -> None:
    env.upload(2, seed=51)
    # The apiserver rejects the pods (no such ServiceAccount) ...
    env.jobs.create(env.job("nosa", serviceAccountName="no-such-account", ttlSecondsAfterFinished=15))
    # ... or the kubelet cannot configure the container (the Secret lacks a key the pods need).
    env.jobs.create(env.job("nokey", s3={"endpoint": env.endpoint, "credentialsSecret": {
        "name": "s3-credentials", "sessionTokenKey": "AWS_SESSION_TOKEN"}}))
    nosa = wait_phase(env, "nosa", "Failed", timeout=60)
    assert "PodRejected" in json.dumps(nosa["conditions"]) and "no-such-account" in nosa["message"]
    assert not env.jobs.pods("nosa")
    nokey = wait_phase(env, "nokey", "Failed", timeout=120)
    assert "CreateContainerConfigError" in nokey["message"] and "AWS_SESSION_TOKEN" in nokey["message"]
    assert [p for p in env.pods.created if p.startswith("nokey")] == ["nokey-s0-a0"], env.pods.errors
    # spec.ttlSecondsAfterFinished: the operator deletes the finished job (nokey has none: it stays).
    wait_until(lambda: not env.jobs.exists("nosa"), timeout=60, what="nosa to be deleted after its TTL")
    assert "Expired" in reasons(env, "nosa") and env.jobs.exists("nokey")


@pytest.mark.slow
def test_deleting_a_running_job_removes_its_pods(env: Env) -> None:
    env.upload(4, seed=61)
    env.jobs.create(env.job("deleted", sharding={"shardCount": 2}, parallelism=2))
    wait_until(lambda: len(env.running_pods("deleted")) == 2, timeout=120, what="two running shard pods")
    env.jobs.delete("deleted")
    wait_until(lambda: not env.jobs.exists("deleted"), timeout=60, what="the OcrJob to be deleted (finalizer released)")
    wait_until(lambda: not env.jobs.pods("deleted"), timeout=90, what="its pods to be garbage-collected")


# -- admission and installation -------------------------------------------------------------------------------
INVALID = [
    ({"output": {"uri": "s3://bucket/in/results"}}, "must not be spec.input.uri or lie inside it"),
    ({"sharding": {"shardCount": 2, "targetShardSize": "1Gi"}}, "set exactly one of shardCount"),
    ({"sharding": {"targetShardSize": "10Ki"}}, "must be a size between 1Mi and 1Ti"),
    ({"input": {"uri": "https://bucket/in"}}, "write it as s3://bucket/prefix"),
    ({"input": {"uri": "s3://bucket/in", "manifest": "s3://bucket/dir/"}}, "s3://bucket/key of one object"),
    ({"parallelism": 0}, "greater than or equal to 1"),
    ({"retries": {"perShard": 1000}}, "less than or equal to 100"),
    ({"device": "tpu"}, 'supported values: "gpu", "cpu"'),
    ({"resources": {"limits": {"nvidia.com/gpu": 2}}}, "remove nvidia.com/gpu"),
    ({"models": {"detection": {"name": "d", "location": "/m/det"}}}, "give both models.detection"),
    ({"models": {"detection": {"name": "d", "location": "models/det"},
                 "recognition": {"name": "r", "location": "/m"}}}, "absolute directory in the image"),
]


@pytest.mark.parametrize(("change", "message"), INVALID, ids=[m.split(":")[0][:30] for _, m in INVALID])
def test_invalid_ocrjobs_are_rejected_with_a_fix(installed: Path, k8s_client: Client,
                                                namespace: str, change: dict[str, Any], message: str) -> None:
    body = ocrjob("invalid", namespace, "bucket", "http://127.0.0.1:1")
    body["spec"].update(change)
    with pytest.raises(KubeError) as err:
        Jobs(k8s_client, namespace).create(body)
    assert err.value.status == 422 and message in err.value.message, err.value.message


def test_long_names_and_planned_locations_are_rejected(installed: Path, k8s_client: Client,
                                                       namespace: str) -> None:
    jobs = Jobs(k8s_client, namespace)
    with pytest.raises(KubeError) as err:
        jobs.create(ocrjob("x" * 51, namespace, "bucket", "http://127.0.0.1:1"))
    assert "at most 50 characters" in err.value.message
    jobs.create(ocrjob("planned", namespace, "bucket", "http://127.0.0.1:1"))
    jobs.patch("planned", {"spec": {"output": {"uri": "s3://bucket/elsewhere"}}})  # not planned yet: allowed
    jobs.patch_status("planned", {"planLocation": "s3://bucket/elsewhere/_ocrjob/u/plan.json"})
    with pytest.raises(KubeError) as err:
        jobs.patch("planned", {"spec": {"input": {"uri": "s3://bucket/other"}}})
    assert err.value.status == 422 and "cannot change once the job is planned" in err.value.message
    jobs.patch("planned", {"spec": {"parallelism": 3, "suspend": True}})  # everything else stays editable


def test_manifests_apply_and_rbac_is_least_privilege(installed: Path, namespace: str) -> None:
    kubectl(installed, "apply", "--dry-run=server", "-k", str(REPO / "manifests"))
    grant_operator(installed, namespace)  # a namespaced install: a Role in each watched namespace, nothing else
    out = kubectl(installed, "-n", namespace, "apply", "--dry-run=server", "-f",
                  str(REPO / "manifests" / "ocrjob.yaml")).stdout
    assert "ocrjob.ocrjob.dev/scans-2024 created (server dry run)" in out
    allowed = [("get", "secrets"), ("create", "pods"), ("delete", "pods"), ("patch", "ocrjobs.ocrjob.dev",
               "--subresource=status"), ("delete", "ocrjobs.ocrjob.dev"), ("create", "events")]
    denied = [("list", "secrets"), ("watch", "secrets"), ("create", "secrets"), ("update", "pods"),
              ("create", "ocrjobs.ocrjob.dev"), ("get", "nodes"), ("create", "pods", "--subresource=exec"),
              ("get", "configmaps")]
    for check in allowed + denied:
        answer = kubectl(installed, "auth", "can-i", *check, "-n", namespace, f"--as={OPERATOR_SA}",
                         check=False).stdout.strip()
        assert answer == ("yes" if check in allowed else "no"), (check, answer)
    for elsewhere in ("kube-system", "default"):  # outside the watched namespaces: nothing at all
        for check in allowed:
            answer = kubectl(installed, "auth", "can-i", *check, "-n", elsewhere, f"--as={OPERATOR_SA}",
                             check=False).stdout.strip()
            assert answer == "no", (elsewhere, check, answer)
    explained = kubectl(installed, "explain", "ocrjob.spec.retries").stdout
    assert "Evictions, preemptions, node loss" in explained and "perShard" in explained
