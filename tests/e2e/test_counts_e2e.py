"""Counts equal storage, on the real control plane: a shard killed after writing some results (one of them an
error record) is retried; the retry skips them. The status never counts fewer documents than before, counts the
earlier attempt's error record as failed (so `ocrjob submit --wait --fail-on-item-errors` exits 9), and the job
summary's counts are those of the result objects in S3, counted here with boto3."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
from typing import Any

import pytest

from inference_pod.job import layout
from ocrjob_cli.exit import ExitCode
from ocrjob_operator.api.client import KubeError
from tests.support.operator_env import OCRJOB, Env, job_flags
from tests.support.operator_harness import Jobs
from tests.support.procs import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.ocr, pytest.mark.slow]
GOOD = 10
CORRUPT_KEY = "000-corrupt.jpg"  # sorts first: the first attempt writes its error record before it is killed


def stored_results(env: Env) -> dict[str, str]:
    """Every result object under out/ (bookkeeping aside) with its status, read from S3 itself."""
    found = {}
    for page in env.s3.get_paginator("list_objects_v2").paginate(Bucket=env.bucket, Prefix="out/"):
        for obj in page.get("Contents", []):
            if not obj["Key"].startswith(f"out/{layout.JOB_DIR}/"):
                found[obj["Key"]] = env.result(obj["Key"])["status"]
    return found


def test_counts_after_a_retry_equal_storage_and_never_go_back(env: Env, shell: dict[str, str]) -> None:
    env.upload(GOOD, seed=91)
    env.put(f"in/{CORRUPT_KEY}", b"\xff\xd8\xff\xe0" + os.urandom(300))
    env.hold_midway()
    total = GOOD + 1
    submit = subprocess.Popen([OCRJOB, "submit", "--name", "counted", *job_flags(env), "--wait", "--timeout", "6m",
                               "--fail-on-item-errors"], env=shell, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    watcher = Jobs(env.cluster.client(), env.namespace)  # its own client: polled from another thread

    def poll() -> None:
        while not stop.wait(0.25):
            try:
                items = watcher.status("counted").get("items")
            except KubeError:
                continue
            if items:
                seen.append(items)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        uid = wait_until(lambda: env.jobs.exists("counted") and env.jobs.get("counted")["metadata"]["uid"],
                         timeout=60, what="the job")

        def midway() -> bool:  # Env.midway, and the error record written
            beat = env.heartbeat("counted") or {}
            items = beat.get("items") or {}
            done = items.get("ok", 0) + items.get("failed", 0) + items.get("skipped", 0)
            return beat.get("pod") == "counted-s0-a0" and items.get("failed", 0) >= 1 and done < total

        wait_until(midway, timeout=240, interval=0.3, what="shard 0 to have written its error record, midway")
        env.cluster.real_node.oom_kill(env.namespace, "counted-s0-a0")
        env.gate.release()
        out, _ = submit.communicate(timeout=400)
    finally:
        stop.set()
        poller.join(timeout=5)
        if submit.poll() is None:
            submit.kill()
    print(out)
    status = env.jobs.status("counted")
    assert status["phase"] == "Succeeded" and env.pods.created == ["counted-s0-a0", "counted-s0-a1"]
    assert submit.returncode == ExitCode.ITEM_ERRORS, out  # the earlier attempt's error record is seen
    shard = env.result(f"out/{layout.shard_summary_key(uid, 0)}")
    assert shard["attempt"] == "1" and shard["items"]["failed_earlier"] == 1  # the retry only skipped it

    stored = stored_results(env)
    ok, errors = sum(s == "ok" for s in stored.values()), sum(s == "error" for s in stored.values())
    assert (ok, errors) == (GOOD, 1) and len(stored) == total
    items = status["items"]
    assert (items["ok"] + items["skipped"], items["failed"], items["done"]) == (ok, errors, total)
    summary = env.result(f"out/{layout.job_summary_key(uid)}")
    counts = summary["items"]
    assert (counts["ok"] + counts["skipped"], counts["failed"], counts["pending"]) == (ok, errors, 0)
    assert [e["key"] for e in summary["failed_items"]] == [CORRUPT_KEY]

    # Polled all along: neither the documents done nor the failed ones ever went back.
    assert len(seen) > 10, seen
    for before, after in itertools.pairwise(seen):
        assert after["done"] >= before["done"] and after["failed"] >= before["failed"], (before, after)
