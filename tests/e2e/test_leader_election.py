"""Exactly one active operator: two operator pods on one namespace elect a leader on a Lease; the standby
takes over within a bounded time when the leader is SIGKILLed (mid-job: nothing lost, nothing twice), at once
when the leader stops cleanly, and a leader whose Lease is taken from it exits at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from inference_pod.job import layout
from ocrjob_operator.__main__ import EXIT_LEADERSHIP_LOST
from ocrjob_operator.api.client import Client, NotFound
from ocrjob_operator.api.names import OPERATOR_NAMESPACE
from ocrjob_operator.leader import JITTER, LEASE_DURATION, RETRY_PERIOD
from tests.support.operator_deploy import OperatorPod, lease_name
from tests.support.operator_env import Env, new_operator
from tests.support.procs import tail, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.ocr]

# Behaviour bounds, not benchmarks: the margin covers a loaded 2-core machine (process start-up, slow requests).
POLL = RETRY_PERIOD * (1 + JITTER)  # a standby's longest wait between two looks at the Lease
TAKEOVER_AFTER_CRASH = LEASE_DURATION + RETRY_PERIOD + 12.0
TAKEOVER_AFTER_RELEASE = POLL + 4.0  # well under LEASE_DURATION: the released lease is not waited out


def holder(client: Client, namespace: str) -> str | None:
    try:
        lease = client.get_lease(OPERATOR_NAMESPACE, lease_name(namespace))
    except NotFound:
        return None
    return (lease.get("spec") or {}).get("holderIdentity")


def leads(client: Client, op: OperatorPod) -> bool:
    return (holder(client, op.namespace) or "").startswith(f"{op.name}_")


@pytest.fixture
def standby(env: Env, k8s_client: Client) -> Iterator[OperatorPod]:
    """A second operator on the same namespace, started after `env.operator` has taken the Lease."""
    wait_until(lambda: leads(k8s_client, env.operator), timeout=30, what="the first operator to lead")
    second = new_operator(env.cluster, env.namespace, env.tmp, name="operator-b")
    try:
        yield second.start()  # its liveness endpoint answers while it is a standby
    finally:
        # Remove the jobs while an operator still runs (it owns their finalizer), then stop this one.
        for job in env.jobs.listed():
            env.jobs.delete(job["metadata"]["name"])
        if second.running() or env.operator.running():
            wait_until(lambda: not env.jobs.listed(), timeout=90, what="OcrJobs to be deleted")
        second.stop()
        print(f"--- second operator log ({second.log}) ---\n{tail(second.log, 80)}")


def wait_finished(env: Env, name: str, timeout: float) -> dict[str, Any]:
    """The status once the job is Succeeded or Failed (a failure shows at once, with its message)."""
    status = env.jobs.wait_status(name, lambda s: s.get("phase") in ("Succeeded", "Failed"), timeout, "finished")
    assert status["phase"] == "Succeeded", status.get("message")
    return status


def planned_by(op: OperatorPod, namespace: str, job: str) -> bool:
    return f"{namespace}/{job} Planned:" in op.log.read_text()


def assert_one_result_per_document(env: Env, corpus: dict[str, Any], uid: str) -> None:
    listed = env.s3.list_objects_v2(Bucket=env.bucket, Prefix="out/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []) if not o["Key"].startswith("out/_ocrjob/"))
    assert keys == sorted(f"out/{layout.result_key(name)}" for name in corpus)
    for name in corpus:
        assert env.result(f"out/{layout.result_key(name)}")["status"] == "ok"
    summary = env.result(f"out/{layout.job_summary_key(uid)}")
    assert summary["status"] == "succeeded" and summary["items"]["ok"] == len(corpus)


@pytest.mark.slow
def test_two_operators_one_leader_one_plan(env: Env, standby: OperatorPod, k8s_client: Client) -> None:
    assert leads(k8s_client, env.operator) and not leads(k8s_client, standby)
    corpus = env.upload(3, seed=41)
    env.jobs.create(env.job("pair", sharding={"shardCount": 1}))
    status = wait_finished(env, "pair", 300)
    assert status["items"]["ok"] == 3
    # The Lease still names the first; only it planned; the standby never acted.
    assert leads(k8s_client, env.operator) and standby.running()
    assert planned_by(env.operator, env.namespace, "pair") and not planned_by(standby, env.namespace, "pair")
    assert [r for r, _ in env.jobs.events("pair")].count("Planned") == 1
    assert f"'{env.operator.name}_" in standby.log.read_text()  # the standby logs who leads
    assert env.pods.created == ["pair-s0-a0"]
    assert_one_result_per_document(env, corpus, env.jobs.get("pair")["metadata"]["uid"])


@pytest.mark.slow
def test_standby_takes_over_a_killed_leader_mid_job(env: Env, standby: OperatorPod, k8s_client: Client) -> None:
    corpus = env.upload(6, seed=43)
    env.gate.hold(*(f"in/{name}" for name in corpus))  # both shards stay running until the takeover is done
    env.jobs.create(env.job("takeover", sharding={"shardCount": 2}, parallelism=2))
    env.jobs.wait_status("takeover", lambda s: s.get("planLocation"), 60, "a plan location")
    uid = env.jobs.get("takeover")["metadata"]["uid"]
    wait_until(lambda: len(env.running_pods("takeover")) == 2, timeout=120, what="two running shard pods")
    killed = time.monotonic()
    env.operator.kill()
    wait_until(lambda: leads(k8s_client, standby), timeout=TAKEOVER_AFTER_CRASH + 30, interval=0.2,
               what="the standby to take the Lease")
    took = time.monotonic() - killed
    assert took <= TAKEOVER_AFTER_CRASH, f"takeover after {took:.1f}s (bound {TAKEOVER_AFTER_CRASH}s)"
    env.gate.release()
    status = wait_finished(env, "takeover", 300)
    assert status["items"] == {"total": 6, "done": 6, "ok": 6, "failed": 0, "skipped": 0}
    # One plan (planned once, by the first leader), one pod per shard, one result per document.
    assert [r for r, _ in env.jobs.events("takeover")].count("Planned") == 1
    assert not planned_by(standby, env.namespace, "takeover")
    assert sorted(env.pods.created) == ["takeover-s0-a0", "takeover-s1-a0"]
    assert status["planLocation"] == f"s3://{env.bucket}/out/{layout.plan_key(uid)}"
    assert_one_result_per_document(env, corpus, uid)


@pytest.mark.slow
def test_a_clean_stop_releases_the_lease(env: Env, standby: OperatorPod, k8s_client: Client) -> None:
    assert env.operator.running()
    env.operator.stop()  # pod deleted: the kubelet's SIGTERM to PID 1, kopf shuts down, the Lease is released
    stopped = time.monotonic()
    assert env.operator.exit_code == 0, tail(env.operator.log, 40)
    assert "released the Lease" in env.operator.log.read_text()
    wait_until(lambda: leads(k8s_client, standby), timeout=LEASE_DURATION + 30, interval=0.2,
               what="the standby to take the released Lease")
    took = time.monotonic() - stopped
    assert took <= TAKEOVER_AFTER_RELEASE, f"takeover after {took:.1f}s (bound {TAKEOVER_AFTER_RELEASE}s)"


@pytest.mark.slow
def test_a_leader_whose_lease_is_taken_exits_at_once(env: Env, k8s_client: Client) -> None:
    wait_until(lambda: leads(k8s_client, env.operator), timeout=30, what="the operator to lead")
    assert env.operator.running()
    lease = k8s_client.get_lease(OPERATOR_NAMESPACE, lease_name(env.namespace))
    lease["spec"]["holderIdentity"] = "somebody-else_0"
    k8s_client.replace_lease(OPERATOR_NAMESPACE, lease_name(env.namespace), lease)
    taken = time.monotonic()
    code = env.operator.wait_exited(timeout=30)
    assert time.monotonic() - taken <= POLL + 5.0
    assert code == EXIT_LEADERSHIP_LOST
    assert "leadership lost" in env.operator.log.read_text()
