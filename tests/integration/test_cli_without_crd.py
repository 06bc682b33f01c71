"""`ocrjob` against a real cluster where the OcrJob CRD is not installed: exit 6 with how to install it, and
the instruction it prints really works. A bare control plane of its own (the shared one has the CRD)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocrjob_cli.exit import ExitCode
from tests.support.cluster import LocalCluster
from tests.support.controlplane import REPO, venv_tool

pytestmark = pytest.mark.cluster
OCRJOB = str(Path(sys.executable).with_name("ocrjob"))


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("bare-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


SUBMIT = ("submit", "-i", "s3://scans/in", "-o", "s3://scans/out", "--image", "ocrjob/inference:t", "--shards", "1",
          "--credentials-secret", "absent", "--name", "scans")


def ocrjob(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cluster.workdir), "COLUMNS": "250",
           "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run([OCRJOB, *args, "-n", "default"], env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_crd_says_how_to_install_it_and_that_works(bare_cluster: LocalCluster) -> None:
    install_hint = "the OcrJob CRD (ocrjobs.ocrjob.dev) is not installed in this cluster: install it with " \
                   "`kubectl apply -k crds/`"
    listed = ocrjob(bare_cluster, "list")
    assert listed.returncode == ExitCode.CLUSTER and install_hint in listed.stderr, listed.stderr
    status = ocrjob(bare_cluster, "status", "scans")
    assert status.returncode == ExitCode.CLUSTER and install_hint in status.stderr, status.stderr
    # submit says it before anything else (here the credentials Secret is missing too)
    submitted = ocrjob(bare_cluster, *SUBMIT)
    assert submitted.returncode == ExitCode.CLUSTER and install_hint in submitted.stderr, submitted.stderr

    # Do what it says; then the same commands work.
    subprocess.run([venv_tool("kubectl"), "--kubeconfig", str(bare_cluster.kubeconfig), "apply", "-k", "crds/"],
                   cwd=REPO, check=True, capture_output=True, timeout=60)
    subprocess.run([venv_tool("kubectl"), "--kubeconfig", str(bare_cluster.kubeconfig), "wait", "--for",
                    "condition=Established", "crd/ocrjobs.ocrjob.dev", "--timeout=30s"],
                   check=True, capture_output=True, timeout=60)
    listed = ocrjob(bare_cluster, "list")
    assert listed.returncode == 0, listed.stderr
    status = ocrjob(bare_cluster, "status", "scans")
    assert status.returncode == ExitCode.NOT_FOUND, status.stderr
    submitted = ocrjob(bare_cluster, *SUBMIT)
    assert submitted.returncode == ExitCode.REJECTED and "Secret default/absent" in submitted.stderr
