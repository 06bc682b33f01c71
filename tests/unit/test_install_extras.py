"""What works with which extra: the cluster commands without the OCR stack (`ocrjob[cli]`), and OCR commands
that say what to install instead of a traceback. Packages are made unimportable in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

OCR_STACK = ("paddle", "paddleocr", "PIL", "pypdfium2", "numpy", "cv2")
CLI_ONLY = (*OCR_STACK, "kopf", "prometheus_client")  # what `pip install ocrjob[cli]` does not bring
REPO = Path(__file__).resolve().parents[2]


def ocrjob_without(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    script = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # import raises ImportError, as if not installed\n"
        "from ocrjob_cli.app import main\n"
        f"main({list(args)!r})\n"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "250", "HOME": str(REPO / ".no-home"),
                               # the child imports the code under test, not whatever an editable install points at
                               "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def test_cluster_commands_work_without_the_ocr_stack(tmp_path: Path) -> None:
    listed = ocrjob_without(CLI_ONLY, "--help")
    assert listed.returncode == 0, listed.stderr
    assert all(command in listed.stdout for command in ("submit", "status", "results", "retry"))
    # Gets as far as reading the kubeconfig (exit 2: no such file): nothing OCR-related was needed.
    status = ocrjob_without(CLI_ONLY, "status", "scans", "--kubeconfig", str(tmp_path / "missing"))
    assert status.returncode == 2 and "no such file" in status.stderr, status.stderr


def test_cluster_commands_without_kubernetes_say_what_to_install() -> None:
    result = ocrjob_without(("kubernetes",), "status", "scans")
    assert result.returncode == 2 and "install `ocrjob[cli]`" in result.stderr, result.stderr


def test_ocr_commands_without_the_ocr_stack_name_what_to_install(tmp_path: Path) -> None:
    run = ocrjob_without(("PIL", "paddleocr"), "run", "-i", str(tmp_path), "-o", str(tmp_path / "out"))
    assert run.returncode == 70, run.stderr
    assert "missing: paddleocr, pillow" in run.stderr and "ocrjob[cpu]" in run.stderr
    assert not (tmp_path / "out").exists()  # nothing started

    log = tmp_path / "termination-log"
    shard = ocrjob_without(("paddle",), "shard", "--manifest", "s3://bucket/m.json", "--termination-log", str(log))
    assert shard.returncode == 70 and "missing: paddlepaddle (or paddlepaddle-gpu)" in shard.stderr
    message = json.loads(log.read_text())  # the loader's own early-failure summary, as the operator reads it
    assert message["status"] == "failed" and message["exit_code"] == 70
    assert message["message"].startswith("the OCR stack is not installed (missing: paddlepaddle")
