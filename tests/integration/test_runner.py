"""`ocrjob run` and `ocrjob demo` as a user runs them: subprocesses, real OCR, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inference_pod.job import exit_codes, layout
from inference_pod.local.runner import local_job_id
from inference_pod.local.samples import generate_corpus

pytestmark = pytest.mark.ocr
REPO = Path(__file__).resolve().parents[2]
OCRJOB = [sys.executable, "-c", "from ocrjob_cli.app import main; main()"]


def env_for(ocr_models, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OCRJOB_MODELS_DIR": str(ocr_models.det_dir.parent),
        "OCRJOB_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "160",
    }


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_run_two_cpu_slots_prints_a_summary(tmp_path, ocr_models) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    expected = generate_corpus(src, 4, seed=11)
    (src / "notes.txt").write_text("not a document")
    result = subprocess.run(
        [*OCRJOB, "run", "--input", str(src), "--output", str(out), "--devices", "cpu:2"],
        env=env_for(ocr_models, tmp_path), cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 documents in 2 shard(s)" in result.stderr and "1 unsupported" in result.stderr
    assert "4 ok" in result.stderr
    for name, words in expected.items():
        record = json.loads((out / layout.result_key(name)).read_text())
        assert set(words) <= set(record["text"].split())
    summary = json.loads((out / layout.job_summary_key(local_job_id(str(src), str(out)))).read_text())
    assert summary["status"] == "succeeded" and summary["items"]["ok"] == 4
    assert len(summary["shards"]) == 2


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(tmp_path, ocr_models) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    generate_corpus(src, 8, seed=12)
    args = [*OCRJOB, "run", "--input", str(src), "--output", str(out), "--devices", "cpu", "--page-batch-size", "1"]
    env = env_for(ocr_models, tmp_path)
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("doc-*.json")):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        output = proc.communicate(timeout=90)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == exit_codes.INTERRUPTED, output[-3000:]
    deadline = time.monotonic() + 20
    while not group_is_gone(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_is_gone(proc.pid), "a child process outlived Ctrl-C"
    done = list(out.glob("doc-*.json"))
    assert 1 <= len(done) < 8
    assert all(json.loads(p.read_text())["status"] == "ok" for p in done)
    assert not list(out.rglob(".ocrjob-tmp-*"))
    rerun = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(done)} skipped" in rerun.stderr
    assert len(list(out.glob("doc-*.json"))) == 8


def test_bad_arguments_are_explained(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"x")
    cases = [
        (["--devices", "tpu:1"], "use cpu, cpu:N"),
        (["--output", str(tmp_path / "in" / "out")], "inside input"),
        (["--det-model-name", "X"], "give all four"),
    ]
    for extra, phrase in cases:
        args = ["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), *extra]
        result = subprocess.run([*OCRJOB, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode in (exit_codes.USAGE, exit_codes.INPUT_ERROR), result.stderr
        assert phrase in " ".join(result.stderr.split()), result.stderr


def test_gpu_on_a_cpu_build_fails_fast_naming_the_fix(tmp_path, ocr_models) -> None:
    generate_corpus(tmp_path / "in", 1, seed=13)
    env = {k: v for k, v in env_for(ocr_models, tmp_path).items() if k not in ("CUDA_VISIBLE_DEVICES",
                                                                               "NVIDIA_VISIBLE_DEVICES")}
    args = ["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--devices", "gpu"]
    result = subprocess.run([*OCRJOB, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == exit_codes.DEVICE_UNSUPPORTED, result.stderr[-3000:]
    said = " ".join(result.stderr.split())
    assert "no CUDA support" in said and "ocrjob[gpu]" in said and "--devices cpu" in said, said[-3000:]


def test_demo_prints_the_recognised_text(tmp_path, ocr_models) -> None:
    from inference_pod.local.samples import generate_samples

    expected = generate_samples(tmp_path / "expected")
    result = subprocess.run(
        [*OCRJOB, "demo", "--workdir", str(tmp_path / "demo")],
        env=env_for(ocr_models, tmp_path), cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = set(result.stdout.split())
    for name, words in expected.items():
        assert name in result.stdout
        assert set(words) <= printed, (name, words)
    assert "error record" in result.stdout
