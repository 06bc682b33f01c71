"""Two active operators (leader election off) on one namespace plan a job at the same moment while its input is
still arriving: the plan is committed exactly once, both run that plan, and nothing is lost or done twice."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest

from inference_pod.job import layout
from inference_pod.local.samples import generate_corpus
from tests.support.operator_deploy import OperatorPod
from tests.support.operator_env import Env, new_operator
from tests.support.procs import tail, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.ocr]

LATE_PAGE = (320, 120)  # documents arriving during planning: tiny, so OCR'ing the planned ones costs little
MAX_LATE = 40


@pytest.fixture
def operators(env: Env) -> Iterator[tuple[OperatorPod, OperatorPod]]:
    """`env.operator` restarted with --no-leader-election, and a second one like it: both act on every job."""
    env.operator.stop()
    env.operator.args = ("--no-leader-election",)
    env.operator.start()
    second = new_operator(env.cluster, env.namespace, env.tmp, args=("--no-leader-election",), name="operator-b")
    try:
        yield env.operator, second.start()
    finally:
        for job in env.jobs.listed():  # while an operator still runs: it owns the finalizer
            env.jobs.delete(job["metadata"]["name"])
        if second.running() or env.operator.running():
            wait_until(lambda: not env.jobs.listed(), timeout=90, what="OcrJobs to be deleted")
        second.stop()
        print(f"--- second operator log ({second.log}) ---\n{tail(second.log, 80)}")


class Arrivals:
    """Keeps uploading new documents under in/late/ from a thread until stopped."""

    def __init__(self, env: Env, page: bytes) -> None:
        self.env, self.page, self.keys = env, page, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrivals", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.keys) < MAX_LATE:
            key = f"late/{len(self.keys):04d}.png"
            self.env.put(f"in/{key}", self.page)
            self.keys.append(key)
            self._stop.wait(0.02)

    def __enter__(self) -> Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def objects(env: Env, prefix: str) -> list[str]:
    pages = env.s3.get_paginator("list_objects_v2").paginate(Bucket=env.bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.mark.slow
def test_two_operators_commit_one_plan_while_input_arrives(
        env: Env, operators: tuple[OperatorPod, OperatorPod]) -> None:
    corpus = env.upload(4, seed=71)  # listed before the job exists: each must get exactly one result
    late = generate_corpus(env.tmp / "late", 1, seed=72, size=LATE_PAGE)
    page = (env.tmp / "late" / next(iter(late))).read_bytes()
    with Arrivals(env, page) as arrivals:
        env.jobs.create(env.job("race", sharding={"shardCount": 2}, parallelism=2))
        env.jobs.wait_status("race", lambda s: s.get("planLocation"), 60, "a plan location")
    status = env.jobs.wait_status("race", lambda s: s.get("phase") in ("Succeeded", "Failed"), 300, "finished")
    assert status["phase"] == "Succeeded", status.get("message")
    uid = env.jobs.get("race")["metadata"]["uid"]

    # Exactly one plan: plan.json, the id in status, and the only manifests left are that plan's.
    plan = env.result(f"out/{layout.plan_key(uid)}")
    assert status["planId"] == plan["plan_id"]
    manifests = [entry["manifest"] for entry in plan["shards"]]
    assert len(manifests) == 2
    assert objects(env, f"out/{layout.job_dir(uid)}/plans/") == sorted(f"out/{m}" for m in manifests)
    planned_ids = {m for r, msg in env.jobs.events("race") if r == "Planned"
                   for m in re.findall(r"plan ([0-9a-f]{16}) at", msg)}
    assert planned_ids == {plan["plan_id"]}  # every operator that planned went on with the committed plan
    for op in operators:  # both acted: neither waited for the other
        assert f"{env.namespace}/race Planned:" in op.log.read_text(), op.name

    # No key in two manifests; every document listed before the job is in the plan.
    keys = [item["key"] for m in manifests for item in env.result(f"out/{m}")["items"]]
    assert len(keys) == len(set(keys)) == plan["item_count"]
    assert set(corpus) <= set(keys) and set(keys) <= set(corpus) | set(arrivals.keys)

    # One result per planned document, none for anything else; the counts agree everywhere.
    results = [k for k in objects(env, "out/") if not k.startswith(f"out/{layout.JOB_DIR}/")]
    assert results == sorted(f"out/{layout.result_key(k)}" for k in keys)
    assert all(env.result(f"out/{layout.result_key(k)}")["status"] == "ok" for k in corpus)
    total = plan["item_count"]
    assert status["items"] == {"total": total, "done": total, "ok": total, "failed": 0, "skipped": 0}
    summary = env.result(f"out/{layout.job_summary_key(uid)}")
    assert summary["status"] == "succeeded" and summary["items"]["ok"] == total
    assert summary["items"]["pending"] == 0
    losers = [line for op in operators for line in op.log.read_text().splitlines() if "lost the commit" in line]
    print(f"planned {total} documents ({len(arrivals.keys)} uploaded during planning); planners that lost the "
          f"commit race: {len(losers)}\n" + "\n".join(losers))
