"""The README's cluster walk, as a newcomer types it: `make cluster-up` (here its command,
`python -m tests.support.cluster up`), the sample job it prints, `kubectl get ocr`, `ocrjob results`, then
`make cluster-down`, which must leave nothing on the host. On the way, the operator's Deployment has
its two replicas run and the leader's pod is deleted while the sample job runs.

It runs its own cluster, so it runs before the session's `cluster` fixture takes the machine's one real node
(`pytest_collection_modifyitems` in tests/support/cluster_fixtures.py puts tests marked `walk` first)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_pod.job.summary_records import JobSummary
from ocrjob_operator.api.names import LEASE_NAME, OPERATOR_NAMESPACE
from ocrjob_operator.api.phases import ConditionType
from tests.support import nodehost, sample_job
from tests.support.cluster_fixtures import real_node_unavailable
from tests.support.controlplane import REPO, venv_tool
from tests.support.operator_deploy import manifest_deployment

pytestmark = [pytest.mark.walk, pytest.mark.cluster, pytest.mark.s3, pytest.mark.ocr, pytest.mark.real_node,
              pytest.mark.slow]
CLUSTER = [sys.executable, "-m", "tests.support.cluster"]


def run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    print(f"$ {shlex.join(argv)}  # exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def sourced(env_sh: Path, base: dict[str, str]) -> dict[str, str]:
    """The environment after `source env.sh` (its lines are plain `export NAME=value`)."""
    env = dict(base)
    for line in env_sh.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short path: containerd's sockets live under it, and a unix socket path has at most 104 bytes (pytest's
    tmp_path for this test is too long)."""
    folder = Path(tempfile.mkdtemp(prefix="ocrjob-walk-"))
    try:
        yield folder / "cluster-local"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_readme_cluster_walk_from_up_to_down(state_dir: Path) -> None:
    reason = real_node_unavailable()
    if reason:
        pytest.skip(reason)
    state = state_dir
    base = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        up = run([*CLUSTER, "up", "--state-dir", str(state)], base, timeout=900)
        assert up.returncode == 0
        # The console (not only a log file) tells the newcomer what to run next.
        sample = state / "sample-ocrjob.yaml"
        assert "Next:" in up.stderr and f"apply -f {sample}" in up.stderr and "make cluster-down" in up.stderr
        env = sourced(state / "env.sh", base)
        kubectl = [venv_tool("kubectl"), "-n", sample_job.SAMPLE_NAMESPACE]
        # The Deployment runs two replicas (manifests/deployment.yaml), one leader; the leader's pod is deleted
        # while the job runs, and the other replica takes over.
        system = [venv_tool("kubectl"), "-n", OPERATOR_NAMESPACE]
        deployment = f"deployment/{manifest_deployment()['metadata']['name']}"
        assert run([*system, "rollout", "status", deployment, "--timeout=180s"], env, timeout=200).returncode == 0
        ready = run([*system, "get", deployment, "-o", "jsonpath={.status.readyReplicas}"], env, timeout=60)
        assert ready.stdout.strip() == str(manifest_deployment()["spec"]["replicas"]) == "2"
        assert run([*kubectl, "apply", "-f", str(sample)], env, timeout=60).returncode == 0
        holder = run([*system, "get", "lease", LEASE_NAME, "-o", "jsonpath={.spec.holderIdentity}"], env, timeout=60)
        leader_pod = holder.stdout.strip().rsplit("_", 1)[0]
        assert leader_pod, "a replica holds the Lease"
        assert run([*system, "delete", "pod", leader_pod, "--wait=false"], env, timeout=60).returncode == 0
        waited = run([*kubectl, "wait", f"--for=condition={ConditionType.SUCCEEDED}", "--timeout=300s",
                      f"ocrjob/{sample_job.SAMPLE_JOB}"], env, timeout=330)
        assert waited.returncode == 0
        listed = run([*kubectl, "get", "ocr"], env, timeout=60)
        assert listed.returncode == 0 and sample_job.SAMPLE_JOB in listed.stdout and "Succeeded" in listed.stdout
        results = run([str(Path(sys.executable).with_name("ocrjob")), "results", "-n", sample_job.SAMPLE_NAMESPACE,
                       "-o", "json", sample_job.SAMPLE_JOB], env, timeout=120)
        assert results.returncode == 0
        summary = JobSummary.from_dict(json.loads(results.stdout))
        assert (summary.status, summary.items.ok) == ("succeeded", sample_job.SAMPLE_DOCUMENTS)
        plan = run([*kubectl, "get", "ocr", sample_job.SAMPLE_JOB, "-o", "jsonpath={.status.planId}"], env, timeout=60)
        assert plan.stdout.strip() and summary.job_id  # planned once, by whichever replica led
    finally:
        began = time.monotonic()
        down = run([*CLUSTER, "down", "--state-dir", str(state)], base, timeout=600)
        print(f"cluster down took {time.monotonic() - began:.1f}s")
    assert down.returncode == 0
    assert nodehost.leftovers() == []
