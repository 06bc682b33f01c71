"""`ocrjob` cluster commands as a CI pipeline runs them: the console script as a subprocess, against the real
control plane with the operator running in-cluster (the operator e2e harness), shard pods on the real node, real
SeaweedFS S3 and real OCR on CPU.

The exit code is the contract: 0 succeeded, 3 failed, 4 timed out, 5 rejected, 9 item errors with
--fail-on-item-errors (ocrjob_cli.exit). The kubeconfig comes from $KUBECONFIG with the namespace in
its context and S3 credentials from the AWS variables, as in a pipeline: no -n, no flags for either.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_pod.job import layout
from inference_pod.local.samples import generate_corpus
from ocrjob_cli.exit import ExitCode
from ocrjob_cli.flags import ANNOTATION_RETRY_ITEMS, ANNOTATION_RETRY_OF_UID, LABEL_RETRY_OF
from tests.support.operator_env import OCRJOB, Env, job_flags, run_cli
from tests.support.operator_harness import REPO, Jobs, upload_dir
from tests.support.procs import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.ocr, pytest.mark.slow]
PAGE = (480, 270)  # small pages: real OCR on 2 CPU cores
CORRUPT = {"bad-1.png": b"\x89PNG but not really", "bad-2.jpg": b"not a jpeg at all"}


def upload(env: Env, count: int, seed: int, corrupt: bool = False) -> list[str]:
    folder = env.tmp / f"docs-{seed}"
    names = list(generate_corpus(folder, count, seed=seed, size=PAGE))
    upload_dir(env.s3, env.bucket, "in", folder)
    if corrupt:
        for key, data in CORRUPT.items():
            env.put(f"in/{key}", data)
        names += list(CORRUPT)
    return sorted(names)


GITLAB_CI = REPO / "examples" / "ci" / "gitlab-ci.yml"


def test_the_gitlab_ci_example_submits_waits_and_exits_0_when_the_job_succeeds(env: Env, shell: dict[str, str]
                                                                                ) -> None:
    """The README's GitLab CI job, run as GitLab would run it: script, then after_script, in the checkout."""
    names = upload(env, 3, seed=1)
    body = env.job("from-file", podCleanupPolicy="Keep")
    del body["metadata"]["namespace"]  # -n "$OCRJOB_NAMESPACE" in the example
    workdir = env.tmp / "checkout"
    workdir.mkdir()
    (workdir / "ocrjob.yaml").write_text(yaml.safe_dump(body))
    ci = yaml.safe_load(GITLAB_CI.read_text())["ocr"]
    pipeline = {**shell, "OCRJOB_NAMESPACE": env.namespace, "CI_PIPELINE_ID": "4242",
                "PATH": f"{Path(OCRJOB).parent}:{shell['PATH']}"}
    started = time.monotonic()
    script = subprocess.run(["bash", "-eo", "pipefail", "-c", "\n".join(ci["script"])], cwd=workdir, env=pipeline,
                            capture_output=True, text=True, timeout=300)
    print(f"script: exit {script.returncode} after {time.monotonic() - started:.1f}s\n{script.stdout}{script.stderr}")
    after = subprocess.run(["bash", "-c", "\n".join(ci["after_script"])], cwd=workdir, env=pipeline,
                           capture_output=True, text=True, timeout=60)
    assert script.returncode == ExitCode.SUCCEEDED and after.returncode == 0, after.stderr
    name = (workdir / "ocrjob-name.txt").read_text().strip()
    assert name.startswith("nightly-") and len(name) == len("nightly-") + 5
    # Progress and events were streamed while it ran, then the verdict.
    err = script.stderr
    for expected in ("Planned: planned 1 shards (3 items", "ShardStarted: started shard 0 (3 items)",
                     "Running 0/3 items", "Succeeded 3/3 items, shards 1/1", f"ocrjob {name} Succeeded after"):
        assert expected in err, expected
    assert err.index("Planned:") < err.index("ShardStarted:") < err.index(f"ocrjob {name} Succeeded")
    summary = json.loads((workdir / "ocr-summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["items"]["ok"] == 3 and summary["failed_items"] == []
    assert env.jobs.get(name)["metadata"]["labels"] == {"gitlab.pipeline-id": "4242"}

    status = json.loads(run_cli(shell, "status", name, "-o", "json").stdout)
    assert status["status"]["phase"] == "Succeeded" and status["metadata"]["namespace"] == env.namespace
    table = run_cli(shell, "status", name).stdout
    assert "Succeeded" in table and "3/3 done: 3 ok, 0 failed" in table and "AllShardsSucceeded" in table
    listed = run_cli(shell, "list").stdout.split()
    assert listed[:6] == ["NAME", "PHASE", "PROGRESS", "SHARDS", "FAILED", "AGE"]
    assert listed[6:11] == [name, "Succeeded", "3/3", "1/1", "0"]
    logs = run_cli(shell, "logs", name, "--shard", "0")
    assert logs.returncode == 0 and "shard 0: processed 3 items (exit 0)" in logs.stdout
    results = run_cli(shell, "results", name, "--download", str(env.tmp / "results"))
    assert results.returncode == 0 and "3 total: 3 ok, 0 failed" in results.stdout
    downloaded = sorted(p.name for p in (env.tmp / "results").glob("*.json"))
    assert downloaded == sorted(layout.result_key(n) for n in names)
    assert json.loads((env.tmp / "results" / layout.result_key(names[0])).read_text())["status"] == "ok"


def test_a_failed_job_exits_3_with_the_reason(env: Env, shell: dict[str, str]) -> None:
    upload(env, 1, seed=2)
    proc = run_cli(shell, "submit", "--name", "nosa", *job_flags(env, **{"--service-account": "no-such-account"}),
                  "--wait", "--timeout", "2m")
    assert proc.returncode == ExitCode.FAILED
    assert proc.stdout.strip() == "nosa"
    assert "PodRejected" in proc.stderr and "ocrjob nosa Failed after" in proc.stderr
    assert 'serviceaccount "no-such-account" not found' in proc.stderr
    assert "Failed" in run_cli(shell, "status", "nosa").stdout  # status itself succeeds: exit 0


def test_rejected_specs_exit_5_with_the_apiservers_words(installed: Path, k8s_client: Any, namespace: str,
                                                         shell: dict[str, str]) -> None:
    flags = ["--input", "s3://bkt/in", "--image", "i", "--shards", "1", "--device", "cpu"]
    inside = run_cli(shell, "submit", *flags, "--output", "s3://bkt/in/results", "--wait", "--timeout", "1m")
    assert inside.returncode == ExitCode.REJECTED and inside.stdout == ""
    assert "the apiserver rejected it:\n  spec.output.uri: Invalid value: spec.output.uri must not be spec.input.uri "\
           "or lie inside it (results would be OCR'd on the next run)" in inside.stderr
    several = run_cli(shell, "submit", *flags, "--output", "s3://bkt/out", "--parallelism", "0", "--set",
                     "retries.perShard=1000")
    assert several.returncode == ExitCode.REJECTED
    assert "spec.parallelism: Invalid value: 0: spec.parallelism in body should be greater than or equal to 1" \
        in several.stderr and "spec.retries.perShard" in several.stderr
    no_secret = run_cli(shell, "submit", *flags, "--output", "s3://bkt/out", "--credentials-secret", "team-s3")
    assert no_secret.returncode == ExitCode.REJECTED
    assert f"the credentials Secret {namespace}/team-s3 (spec.s3.credentialsSecret.name) does not exist: create it " \
           f"with `kubectl -n {namespace} create secret generic team-s3" in no_secret.stderr
    taken = [run_cli(shell, "submit", *flags, "--output", "s3://bkt/out", "--name", "twice") for _ in range(2)]
    assert [p.returncode for p in taken] == [ExitCode.SUCCEEDED, ExitCode.REJECTED]
    assert 'ocrjobs.ocrjob.dev "twice" already exists' in taken[1].stderr
    dry = run_cli(shell, "submit", *flags, "--output", "s3://bkt/out", "--name", "dry", "--dry-run")
    assert dry.returncode == 0 and yaml.safe_load(dry.stdout)["spec"]["parallelism"] == 1  # CRD default applied
    missing = run_cli(shell, "status", "nope")
    assert missing.returncode == ExitCode.NOT_FOUND and 'ocrjobs.ocrjob.dev "nope" not found' in missing.stderr
    assert run_cli(shell, "list", "-o", "name").stdout.split() == ["twice"]  # nothing else was created
    Jobs(k8s_client, namespace).delete("twice")  # no operator here: it has no finalizer yet


def test_timeout_exits_4_and_cancel_on_timeout_deletes_the_job(env: Env, shell: dict[str, str]) -> None:
    upload(env, 2, seed=3)
    started = time.monotonic()
    proc = run_cli(shell, "submit", "--name", "slow", *job_flags(env), "--wait", "--timeout", "5",
                  "--cancel-on-timeout")
    assert proc.returncode == ExitCode.TIMEOUT and time.monotonic() - started < 30
    assert "timed out after 5s waiting for ocrjob slow" in proc.stderr
    assert "deleted (--cancel-on-timeout)" in proc.stderr
    wait_until(lambda: not env.jobs.exists("slow"), timeout=60, what="ocrjob slow to be deleted")


def test_suspend_resume_and_cancel(env: Env, shell: dict[str, str]) -> None:
    upload(env, 2, seed=4)
    assert run_cli(shell, "submit", "--name", "paused", *job_flags(env), "--suspend").returncode == 0
    wait_until(lambda: env.jobs.status("paused").get("phase") == "Suspended", timeout=60, what="phase Suspended")
    assert "Suspended" in run_cli(shell, "status", "paused").stdout and not env.jobs.pods("paused")
    assert run_cli(shell, "resume", "paused").returncode == 0
    assert env.jobs.get("paused")["spec"]["suspend"] is False
    assert run_cli(shell, "suspend", "paused").returncode == 0
    assert env.jobs.get("paused")["spec"]["suspend"] is True
    cancel = run_cli(shell, "cancel", "paused", "--timeout", "60s")
    assert cancel.returncode == 0 and not env.jobs.exists("paused")
    assert run_cli(shell, "cancel", "paused").returncode == ExitCode.NOT_FOUND


def test_retry_reprocesses_exactly_the_failed_items(env: Env, shell: dict[str, str]) -> None:
    names = upload(env, 3, seed=5, corrupt=True)
    good = [n for n in names if n not in CORRUPT]
    first = run_cli(shell, "submit", "--name", "first", *job_flags(env), "--wait", "--timeout", "4m",
                   "--fail-on-item-errors")
    assert first.returncode == ExitCode.ITEM_ERRORS, first.stderr
    assert "ocrjob first Succeeded" in first.stderr and "2 document(s) have error records" in first.stderr
    summary = json.loads(run_cli(shell, "results", "first", "-o", "json").stdout)
    assert sorted(item["key"] for item in summary["failed_items"]) == sorted(CORRUPT)
    table = run_cli(shell, "results", "first").stdout
    assert "Failed items (2)" in table and "unsupported_format" in table and "ocrjob retry first" in table
    stamps = {n: env.s3.head_object(Bucket=env.bucket, Key=f"out/{layout.result_key(n)}")["LastModified"]
              for n in good}

    # The user fixes the two inputs, then retries: only those two are OCR'd again.
    fixed = generate_corpus(env.tmp / "fixed", 2, seed=6, size=PAGE)
    for key, source in zip(CORRUPT, fixed, strict=True):
        env.s3.upload_file(str(env.tmp / "fixed" / source), env.bucket, f"in/{key}")
    dry = run_cli(shell, "retry", "first", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.split() == sorted(CORRUPT)
    retried = run_cli(shell, "retry", "first", "--wait", "--timeout", "4m", "--fail-on-item-errors")
    assert retried.returncode == ExitCode.SUCCEEDED, retried.stderr
    new = retried.stdout.split()[0]
    assert new.startswith("first-retry-") and "retries 2 document(s) of first: 2 with an error record" in retried.stderr

    original, retry = env.jobs.get("first"), env.jobs.get(new)
    assert retry["metadata"]["labels"][LABEL_RETRY_OF] == "first"
    assert retry["metadata"]["annotations"][ANNOTATION_RETRY_OF_UID] == original["metadata"]["uid"]
    assert retry["metadata"]["annotations"][ANNOTATION_RETRY_ITEMS] == "2"
    manifest = retry["spec"]["input"]["manifest"]
    assert manifest.startswith(f"s3://{env.bucket}/out/_ocrjob/{original['metadata']['uid']}/retries/")
    assert {k: v for k, v in retry["spec"].items() if k != "input"} == \
        {k: v for k, v in original["spec"].items() if k != "input"}
    # Its plan holds exactly the two failed keys.
    uid = retry["metadata"]["uid"]
    plan = env.result(f"out/{layout.plan_key(uid)}")
    manifests = [env.result(f"out/{shard['manifest']}") for shard in plan["shards"]]
    planned = sorted(item["key"] for manifest_ in manifests for item in manifest_["items"])
    assert plan["item_count"] == 2 and planned == sorted(CORRUPT)
    for key in CORRUPT:
        assert env.result(f"out/{layout.result_key(key)}")["status"] == "ok"
    for key in good:  # untouched
        assert env.s3.head_object(Bucket=env.bucket, Key=f"out/{layout.result_key(key)}")["LastModified"] == \
            stamps[key]
    assert run_cli(shell, "list", "-l", f"{LABEL_RETRY_OF}=first", "-o", "name").stdout.split() == [new]
    nothing = run_cli(shell, "retry", new)
    assert nothing.returncode == 0 and "nothing to retry" in nothing.stderr
