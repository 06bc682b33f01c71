"""The reconcile loop against an in-memory Kubernetes and local-disk storage: planning, dispatch within
parallelism, retries, fail-fast, suspend, stall kills, finishing, and restarts that duplicate nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inference_pod.job import layout, plan_table
from inference_pod.job.plan import load_plan, manifest_key
from ocrjob_operator.api import rbac
from ocrjob_operator.api.client import Forbidden, Invalid, KubeError, QuotaExceeded, Unavailable
from ocrjob_operator.api.fields import default
from ocrjob_operator.api.names import ANNOTATION_MANIFEST, pod_name
from ocrjob_operator.controller import Controller, JobMemo
from tests.unit.ocrjob_operator.fakes import UID, reasons, write_summary


def test_happy_path_plan_dispatch_finish(world) -> None:
    kube, storage, events, _clock, controller = world()
    ctl = controller()
    assert ctl.reconcile("ns", "job") == 0.0  # planned: status written before any pod exists
    status = kube.job["status"]
    assert status["planLocation"] == f"s3://bucket/out/{layout.plan_key(UID)}" and not kube.pods
    assert status["phase"] == "Running" and status["items"]["total"] == 8 and status["shards"]["total"] == 4
    assert "Planned" in reasons(events) and "UnsupportedSkipped" in reasons(events)
    ctl.reconcile("ns", "job")
    assert kube.created == [pod_name("job", 0, 0), pod_name("job", 1, 0)]  # parallelism 2
    ctl.reconcile("ns", "job")
    assert kube.created == [pod_name("job", 0, 0), pod_name("job", 1, 0)]
    kube.run(pod_name("job", 0, 0))
    storage.dest.put(layout.progress_key(UID, 0), json.dumps({"pod": pod_name("job", 0, 0), "updated_at": 1,
                                                              "items": {"ok": 1, "failed": 0, "skipped": 0}}).encode())
    ctl.reconcile("ns", "job")
    assert kube.job["status"]["progress"] == "1/8"  # live progress from the heartbeat
    for shard in range(4):
        name = pod_name("job", shard, 0)
        if name not in kube.pods:
            ctl.reconcile("ns", "job")
        kube.finish(name, 0, {"ok": 2, "failed": 0, "skipped": 0})
        write_summary(storage, shard, 2)
        ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "8/8" and status["shardProgress"] == "4/4"
    assert status["summaryLocation"] == f"s3://bucket/out/{layout.job_summary_key(UID)}"
    summary = json.loads(storage.dest.get(layout.job_summary_key(UID)))
    assert summary["status"] == "succeeded" and len(summary["attempts"]) == 4
    assert storage.dest.exists(layout.job_index_key(UID))
    assert kube.pods == {}  # DeleteSucceeded
    assert reasons(events).count("ShardStarted") == 4 and "Succeeded" in reasons(events)
    writes = kube.status_writes
    controller().reconcile("ns", "job")  # a restart after the end changes nothing
    assert kube.status_writes == writes


def test_restart_at_every_step_never_duplicates_a_pod(world) -> None:
    kube, storage, _events, _clock, controller = world()
    for _ in range(3):
        controller().reconcile("ns", "job")
    assert kube.created == [pod_name("job", 0, 0), pod_name("job", 1, 0)]
    kube.finish(pod_name("job", 0, 0), 0, {"ok": 2})
    write_summary(storage, 0, 2)
    controller().reconcile("ns", "job")
    controller().reconcile("ns", "job")
    assert kube.created == [pod_name("job", 0, 0), pod_name("job", 1, 0), pod_name("job", 2, 0)]


def test_existing_plan_is_never_replanned(world) -> None:
    kube, storage, _events, _clock, controller = world()
    controller().reconcile("ns", "job")
    plan = storage.dest.get(layout.plan_key(UID))
    storage.source.put("doc-new.png", b"y" * 5000)  # the listing changes after planning
    kube.job["status"].pop("planLocation")  # even if the status were lost
    controller().reconcile("ns", "job")
    assert storage.dest.get(layout.plan_key(UID)) == plan


def test_counted_retry_with_backoff_then_failure_when_budget_spent(world) -> None:
    kube, _storage, events, clock, controller = world(sharding={"shardCount": 1}, parallelism=1)
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    kube.finish(pod_name("job", 0, 0), 137, reason="OOMKilled", at=clock.t)
    delay = ctl.reconcile("ns", "job")
    assert pod_name("job", 0, 1) not in kube.pods and delay is not None and delay <= 10  # waiting for the backoff
    clock.t += 11
    ctl.reconcile("ns", "job")
    assert pod_name("job", 0, 1) in kube.pods
    assert any(r == "ShardRetried" and "OOMKilled" in m for _, r, m in events)
    kube.finish(pod_name("job", 0, 1), 70, at=clock.t)
    clock.t += 100
    ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["phase"] == "Failed" and status["failedShards"][0]["reason"] == "RetriesExhausted"
    assert status["retries"]["counted"] == 2 and pod_name("job", 0, 2) not in kube.created
    assert "ShardFailed" in reasons(events)
    assert set(kube.pods) == {pod_name("job", 0, 0), pod_name("job", 0, 1)}  # failed pods are kept for their logs


def test_eviction_does_not_spend_the_budget(world) -> None:
    kube, _storage, _events, clock, controller = world(sharding={"shardCount": 1}, parallelism=1,
                                                       retries={"perShard": 0})
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    kube.finish(pod_name("job", 0, 0), 137, pod_reason="Evicted", at=clock.t - 10)
    ctl.reconcile("ns", "job")
    assert pod_name("job", 0, 1) in kube.pods
    assert kube.job["status"]["retries"] == {"counted": 0, "disruptions": 1, "storage": 0}


def test_input_error_is_not_retried_and_the_rest_finishes(world) -> None:
    kube, storage, _events, clock, controller = world(sharding={"shardCount": 2}, parallelism=2,
                                                      retries={"perShard": 3})
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    kube.finish(pod_name("job", 1, 0), 65)
    clock.t += 1000
    ctl.reconcile("ns", "job")
    assert pod_name("job", 1, 1) not in kube.pods and kube.job["status"]["phase"] == "Running"
    kube.finish(pod_name("job", 0, 0), 0, {"ok": 4})
    write_summary(storage, 0, 4)
    ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["phase"] == "Failed" and status["failedShards"][0]["reason"] == "InvalidInput"
    assert json.loads(storage.dest.get(layout.job_summary_key(UID)))["status"] == "failed"


def test_config_error_fails_fast(world) -> None:
    kube, _storage, events, _clock, controller = world()
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    kube.run(pod_name("job", 1, 0))
    kube.pods[pod_name("job", 0, 0)]["status"] = {"phase": "Pending", "containerStatuses": [
        {"name": "ocr", "state": {"waiting": {"reason": "InvalidImageName", "message": "bad image"}}}]}
    ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["phase"] == "Failed" and "InvalidImageName" in status["message"] and "spec.image" in status["message"]
    assert pod_name("job", 1, 0) in kube.deleted and len(kube.created) == 2
    assert "ShardStopped" in reasons(events)


def test_suspend_stops_pods_and_resume_continues(world) -> None:
    kube, _storage, events, _clock, controller = world()
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    kube.run(pod_name("job", 0, 0))
    kube.job["spec"]["suspend"] = True
    ctl.reconcile("ns", "job")
    assert kube.job["status"]["phase"] == "Suspended"
    assert set(kube.deleted) == {pod_name("job", 0, 0), pod_name("job", 1, 0)}
    ctl.reconcile("ns", "job")
    assert len(kube.created) == 2
    kube.job["spec"]["suspend"] = False
    ctl.reconcile("ns", "job")
    assert kube.job["status"]["phase"] == "Running"
    # New attempt numbers: a name of a pod that was deleted is never reused (it may still be terminating).
    assert kube.created[2:] == [pod_name("job", 0, 1), pod_name("job", 1, 1)]
    assert "Suspended" in reasons(events) and "Resumed" in reasons(events)


def test_stalled_pod_is_killed_through_its_deadline(world) -> None:
    kube, storage, events, clock, controller = world(stallTimeoutSeconds=60, sharding={"shardCount": 1})
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    kube.run(pod_name("job", 0, 0))
    ctl.reconcile("ns", "job")
    clock.t += 120  # no heartbeat yet: starting up, within the first-heartbeat grace
    ctl.reconcile("ns", "job")
    assert kube.killed == []
    beat = {"pod": pod_name("job", 0, 0), "updated_at": 1, "items": {"ok": 0}}
    storage.dest.put(layout.progress_key(UID, 0), json.dumps(beat).encode())
    ctl.reconcile("ns", "job")
    clock.t += 50
    ctl.reconcile("ns", "job")
    assert kube.killed == []
    clock.t += 20
    ctl.reconcile("ns", "job")
    assert kube.killed and kube.killed[0][0] == pod_name("job", 0, 0)
    assert "ShardStalled" in reasons(events)


def test_shard_done_in_storage_is_not_rerun(world) -> None:
    kube, storage, _events, _clock, controller = world(sharding={"shardCount": 2})
    ctl = controller()
    ctl.reconcile("ns", "job")
    write_summary(storage, 0, 4)  # finished by an earlier incarnation whose pods are gone
    ctl.reconcile("ns", "job")
    assert kube.created == [pod_name("job", 1, 0)]
    assert kube.job["status"]["shards"]["succeeded"] == 1


def test_missing_secret_keeps_the_job_pending_with_a_bounded_retry(world) -> None:
    from ocrjob_operator.storage import CredentialsError

    kube, _storage, events, clock, _controller = world()

    class NoSecret:
        def for_job(self, namespace: str, spec: Any) -> Any:
            raise CredentialsError("Secret ns/s3 (spec.s3.credentialsSecret) does not exist: create it")

    ctl = Controller(kube, NoSecret(), lambda _j, t, r, m: events.append((t, r, m)), clock=clock, monotonic=clock)
    delay = ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["phase"] == "Pending" and "create it" in status["message"] and delay == 5
    storage_condition = next(c for c in status["conditions"] if c["type"] == "StorageAvailable")
    assert storage_condition["status"] == "False" and "create it" in storage_condition["message"]
    bound = default("retries.infrastructureTimeoutSeconds")
    started = clock.t
    while clock.t - started < bound - 60:  # bounded by time, not by a number of attempts
        clock.t += 60
        ctl.reconcile("ns", "job")
        assert kube.job["status"]["phase"] in ("Pending", "Planning")
    clock.t += 120
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    assert kube.job["status"]["phase"] == "Failed", kube.job["status"]
    assert next(c for c in kube.job["status"]["conditions"] if c["type"] == "Failed")["reason"] == "StorageUnavailable"


def test_a_namespace_that_never_granted_its_secrets_fails_the_job_at_once_with_the_command(world) -> None:
    kube, _storage, events, clock, _controller = world(s3={"credentialsSecret": {"name": "s3"}})

    class NotGranted:
        def for_job(self, namespace: str, spec: Any) -> Any:
            raise Forbidden(403, 'secrets "s3" is forbidden: User "system:serviceaccount:ocrjob-system:'
                                 'ocrjob-operator" cannot get resource "secrets" in the namespace "ns"')

    ctl = Controller(kube, NotGranted(), lambda _j, t, r, m: events.append((t, r, m)), clock=clock, monotonic=clock)
    ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["phase"] == "Failed" and "SecretsNotGranted" in reasons(events)
    assert rbac.grant_command("ns") in status["message"] and "ns/s3" in status["message"]


def test_plan_error_fails_with_the_planner_message(world, tmp_path: Path) -> None:
    kube, storage, _events, _clock, controller = world()
    for obj in list(storage.source.list()):
        storage.source.delete(obj.key)
    controller().reconcile("ns", "job")
    assert kube.job["status"]["phase"] == "Failed" and "no supported documents" in kube.job["status"]["message"]


def test_an_input_too_large_to_plan_fails_the_job_before_the_operator_holds_it(world, monkeypatch) -> None:
    kube, _storage, _events, _clock, controller = world()
    monkeypatch.setattr(plan_table, "MAX_TABLE_BYTES", 64)
    monkeypatch.setattr(plan_table, "CHECK_EVERY", 1)
    controller().reconcile("ns", "job")
    assert kube.job["status"]["phase"] == "Failed" and "split it into several jobs" in kube.job["status"]["message"]
    assert next(c for c in kube.job["status"]["conditions"] if c["type"] == "Failed")["reason"] == "PlanTooLarge"


def test_invalid_spec_fails_with_the_fix(world) -> None:
    kube, _storage, _events, _clock, controller = world(parallelism=0)
    controller().reconcile("ns", "job")
    assert kube.job["status"]["phase"] == "Failed" and "between 1 and 1000" in kube.job["status"]["message"]


def test_ttl_deletes_the_finished_job(world) -> None:
    kube, storage, _events, clock, controller = world(sharding={"shardCount": 1}, ttlSecondsAfterFinished=30)
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    kube.finish(pod_name("job", 0, 0), 0, {"ok": 8})
    write_summary(storage, 0, 8)
    ctl.reconcile("ns", "job")
    assert kube.job is not None and kube.job["status"]["phase"] == "Succeeded"
    clock.t += 31
    ctl.reconcile("ns", "job")
    assert kube.job is None


def test_memo_is_only_a_cache() -> None:
    memo = JobMemo()
    assert memo.plan is None and not memo.expectations.created and not memo.succeeded_in_storage


def test_summary_is_written_even_when_a_shard_manifest_is_damaged(world) -> None:
    kube, storage, _events, _clock, controller = world(sharding={"shardCount": 2}, parallelism=2)
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    storage.dest.put(manifest_key(load_plan(storage.dest, UID) or {}, 1), b"{ not json")
    kube.finish(pod_name("job", 1, 0), 65)
    kube.finish(pod_name("job", 0, 0), 0, {"ok": 4})
    write_summary(storage, 0, 4)
    ctl.reconcile("ns", "job")
    status = kube.job["status"]
    assert status["phase"] == "Failed" and status["summaryLocation"]
    summary = json.loads(storage.dest.get(layout.job_summary_key(UID)))
    assert summary["status"] == "failed"
    index = json.loads(storage.dest.get(layout.job_index_key(UID)))
    assert [entry["shard"] for entry in index["unreadable_manifests"]] == [1]
    assert [part["shard"] for part in index["parts"]] == [0] and index["entries"] == 4
    assert {json.loads(line)["shard"] for line in storage.dest.get(index["parts"][0]["key"]).splitlines()} == {0}
    assert summary["failed_shards"][0]["reason"] == "InvalidInput"


def test_input_manifest_limits_the_plan_to_its_keys(world) -> None:
    kube, storage, _events, _clock, controller = world(input={"uri": "s3://bucket/in",
                                                              "manifest": "s3://bucket/lists/failed.txt"})
    (storage.root / "objects").mkdir()
    (storage.root / "objects" / "failed.txt").write_text("doc-1.png\ndoc-5.png\n")
    controller().reconcile("ns", "job")
    status = kube.job["status"]
    assert status["items"]["total"] == 2 and status["shards"]["total"] == 2
    plan = json.loads(storage.dest.get(layout.plan_key(UID)))
    keys = sorted(item["key"] for s in plan["shards"]
                  for item in json.loads(storage.dest.get(s["manifest"]))["items"])
    assert keys == ["doc-1.png", "doc-5.png"]


def test_each_step_writes_status_at_most_once(world) -> None:
    kube, storage, _events, clock, controller = world(sharding={"shardCount": 2}, parallelism=1)
    ctl = controller()
    writes_per_call = []

    def step() -> None:
        before = kube.status_writes
        ctl.reconcile("ns", "job")
        writes_per_call.append(kube.status_writes - before)

    step()  # planning: "Planning" goes out before the listing, then the planned status: two steps in one call
    assert writes_per_call == [2] and kube.job["status"]["planLocation"]
    for shard in range(2):
        step()
        kube.run(f"job-s{shard}-a0")
        step()
        kube.finish(f"job-s{shard}-a0", 0, {"ok": 4})
        write_summary(storage, shard, 4)
        clock.t += 1
        step()
    assert kube.job["status"]["phase"] == "Succeeded"
    assert all(n <= 1 for n in writes_per_call[1:]), writes_per_call


def test_shards_done_in_storage_are_all_found_before_deciding(world) -> None:
    kube, storage, _events, _clock, controller = world(sharding={"shardCount": 4}, parallelism=1)
    ctl = controller()
    ctl.reconcile("ns", "job")
    for shard in (0, 1, 2):  # finished by an earlier incarnation whose pods are gone
        write_summary(storage, shard, 2)
    ctl.reconcile("ns", "job")
    assert kube.created == ["job-s3-a0"]  # the one slot went to the only unfinished shard
    assert kube.job["status"]["shards"]["succeeded"] == 3 and kube.job["status"]["items"]["ok"] == 6


def test_a_pod_created_but_not_listed_yet_counts_against_parallelism(world) -> None:
    kube, _storage, _events, clock, controller = world(sharding={"shardCount": 3}, parallelism=1)
    ctl = controller()
    ctl.reconcile("ns", "job")
    ctl.reconcile("ns", "job")
    assert kube.created == ["job-s0-a0"]
    hidden = kube.pods.pop("job-s0-a0")  # a lagging list: the pod exists but is not listed
    ctl.reconcile("ns", "job")
    assert kube.created == ["job-s0-a0"]  # no second pod while the first one is expected
    kube.pods["job-s0-a0"] = hidden
    clock.t += 60
    ctl.reconcile("ns", "job")
    assert kube.created == ["job-s0-a0"]


@pytest.mark.parametrize(("error", "fails"), [
    (Invalid(422, 'Pod "job-s0-a0" is invalid: spec.containers[0].image: Required value'), True),
    (Forbidden(403, 'pods "job-s0-a0" is forbidden: error looking up service account ns/nope'), True),
    (QuotaExceeded(403, 'pods "job-s0-a0" is forbidden: exceeded quota: compute'), False),
    (Unavailable(503, "etcdserver: leader changed"), False),
])
def test_a_rejected_pod_fails_the_job_and_a_full_namespace_waits(world, error: KubeError, fails: bool) -> None:
    kube, _storage, _events, _clock, controller = world()
    ctl = controller()
    ctl.reconcile("ns", "job")  # planned

    def refuse(pod: dict[str, Any]) -> bool:
        raise error

    kube.create_pod = refuse
    ctl.reconcile("ns", "job")
    status = kube.job["status"]
    if fails:
        assert status["phase"] == "Failed" and "PodRejected" in json.dumps(status["conditions"])
        assert error.message in status["message"]
    else:
        assert status["phase"] != "Failed" and f"cannot create pods yet: {error.message}" in status["message"]


def test_the_plan_id_is_recorded_and_a_replaced_plan_fails_the_job(world) -> None:
    kube, storage, events, _clock, controller = world(sharding={"shardCount": 2}, parallelism=2)
    ctl = controller()
    ctl.reconcile("ns", "job")
    plan = load_plan(storage.dest, UID) or {}
    assert kube.job["status"]["planId"] == plan["plan_id"]
    ctl.reconcile("ns", "job")
    manifests = {p["metadata"]["annotations"][ANNOTATION_MANIFEST] for p in kube.pods.values()}
    assert manifests == {f"s3://bucket/out/{manifest_key(plan, i)}" for i in range(2)}  # the plan's own manifests
    # Storage that ignored the conditional create let another planner replace plan.json.
    storage.dest.put(layout.plan_key(UID), json.dumps({**plan, "plan_id": layout.random_id()}).encode())
    controller().reconcile("ns", "job")  # a restarted (or second) operator reads the stored plan
    status = kube.job["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PlanConflict" and plan["plan_id"] in status["message"]
    assert "PlanConflict" in reasons(events) and kube.pods == {}
