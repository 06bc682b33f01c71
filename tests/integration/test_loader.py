"""The loader end to end with real PaddleOCR on CPU, on the local filesystem and on a real S3 server."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference_pod.job import exit_codes, layout
from inference_pod.job.plan import ShardingPolicy, make_plan, manifest_key
from inference_pod.job.storage import LocalStorage, S3Settings, open_storage
from inference_pod.job.summary import write_job_summary
from inference_pod.local.samples import generate_corpus, render_page
from inference_pod.models import ModelSource
from inference_pod.shard.config import LoaderConfig
from inference_pod.shard.coordinator import run_shard as run_shard_record


def run_shard(config: LoaderConfig) -> tuple[int, dict]:
    """The shard's exit code and its summary as stored (JSON object)."""
    code, summary = run_shard_record(config)
    return code, summary.to_dict()

pytestmark = pytest.mark.ocr
REPO = Path(__file__).resolve().parents[2]


def model_source(spec) -> ModelSource:
    return ModelSource(spec.det_name, str(spec.det_dir), spec.rec_name, str(spec.rec_dir))


def words_of(record: dict) -> set[str]:
    return {word for page in record["pages"] for line in page["lines"] for word in line["text"].split()}


def bad_inputs(folder: Path) -> dict[str, str]:
    """Files the loader must turn into error records, with the code each must get."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(300))
    (folder / "text-named.png").write_bytes(b"just some text, not an image\n" * 10)
    # A tiny PNG declaring 30000x30000 pixels.
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)
    (folder / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b"")
    )
    noise = np.random.default_rng(1).integers(0, 255, (2200, 2200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "huge.png")  # 4.8 Mpx of noise: over the test's pixel limit, not a bomb
    return {
        "empty.png": "empty", "corrupt.jpg": "corrupt", "text-named.png": "unsupported_format",
        "bomb.png": "decompression_bomb", "huge.png": "pixel_limit_exceeded",
    }


def make_config(ocr_models, manifest: str, **kw) -> LoaderConfig:
    from inference_pod.shard.decode import DecodeLimits

    return LoaderConfig(
        manifest=manifest, models=model_source(ocr_models), termination_log=kw.pop("termination_log", None),
        limits=DecodeLimits(max_pixels=4_000_000), heartbeat_seconds=0.5, **kw,
    )


def plan_local(src: Path, out: Path, job: str, shards: int = 1) -> dict:
    return make_plan(job, str(src), str(out), LocalStorage(src), LocalStorage(out), ShardingPolicy(shard_count=shards))


def test_shard_recognises_words_and_turns_bad_files_into_error_records(tmp_path, ocr_models) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    expected = generate_corpus(src / "pages", 3, seed=5)
    pdf_words = ["Invoice", "Payment"]
    pages = [render_page([pdf_words[0]], size=(600, 300)), render_page([pdf_words[1]], size=(600, 300))]
    pages[0].save(src / "scan.pdf", "PDF", save_all=True, append_images=pages[1:])
    # Fresh page objects: Pillow writes a wrong multi-page TIFF from images just used for a PDF save.
    fax = [render_page([word], size=(600, 300)) for word in reversed(pdf_words)]
    fax[0].save(src / "fax.tiff", save_all=True, append_images=fax[1:])
    bad = bad_inputs(src / "bad")
    plan = plan_local(src, out, "job-one")
    termination = tmp_path / "termination-log"
    code, summary = run_shard(
        make_config(ocr_models, str(out / manifest_key(plan, 0)), termination_log=str(termination))
    )
    assert code == exit_codes.SUCCEEDED, summary["message"]
    assert summary["items"]["ok"] == 5 and summary["items"]["failed"] == len(bad)
    for name, words in expected.items():
        record = json.loads((out / layout.result_key(f"pages/{name}")).read_text())
        assert record["status"] == "ok"
        assert set(words) <= words_of(record), (name, record["text"])
        assert record["device"]["kind"] == "cpu" and record["models"]
    pdf = json.loads((out / "scan.pdf.json").read_text())
    assert pdf["page_count"] == 2 and [p["text"] for p in pdf["pages"]] == pdf_words
    tiff = json.loads((out / "fax.tiff.json").read_text())
    assert [p["text"] for p in tiff["pages"]] == list(reversed(pdf_words))
    for name, code_expected in bad.items():
        record = json.loads((out / layout.result_key(f"bad/{name}")).read_text())
        assert record["status"] == "error" and record["error"]["code"] == code_expected, record["error"]
    assert {e["key"]: e["code"] for e in summary["errors"]} == {f"bad/{k}": v for k, v in bad.items()}
    message = json.loads(termination.read_bytes())
    assert len(termination.read_bytes()) <= 4096 and message["items"]["failed"] == len(bad)
    progress = json.loads((out / layout.progress_key("job-one", 0)).read_text())
    assert progress["state"] == "succeeded"


def test_a_page_without_text_is_flagged_unless_it_is_blank(tmp_path, ocr_models) -> None:
    from PIL import ImageDraw

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.new("RGB", (600, 300), "white").save(src / "blank.png")
    drawing = Image.new("RGB", (600, 300), "white")  # not blank, and nothing a text detector takes for text
    ImageDraw.Draw(drawing).ellipse((150, 30, 450, 270), fill=(60, 60, 60))
    drawing.save(src / "drawing.png")
    render_page(["Invoice"], size=(600, 300)).save(src / "text.png")
    plan = plan_local(src, out, "job-no-text")
    code, summary = run_shard(make_config(ocr_models, str(out / manifest_key(plan, 0))))
    assert code == exit_codes.SUCCEEDED, summary["message"]
    pages = {name: json.loads((out / layout.result_key(name)).read_text())["pages"][0]
             for name in ("blank.png", "drawing.png", "text.png")}
    assert pages["drawing.png"]["lines"] == [] and pages["drawing.png"]["no_text_found"] is True
    assert pages["blank.png"]["lines"] == [] and "no_text_found" not in pages["blank.png"]
    assert pages["text.png"]["text"] == "Invoice" and "no_text_found" not in pages["text.png"]
    assert summary["items"]["no_text_pages"] == 1
    job = write_job_summary(LocalStorage(out), "job-no-text")
    assert job["items"]["no_text_pages"] == 1  # counted again from storage


def test_sigterm_midway_then_rerun_processes_only_the_rest(tmp_path, ocr_models) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    generate_corpus(src, 10, seed=9)
    (src / "aaa-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # sorted first: done before the stop
    plan = plan_local(src, out, "job-resume")
    manifest = str(out / manifest_key(plan, 0))
    termination = tmp_path / "term"
    env = {**os.environ, "OCRJOB_TERMINATION_LOG": str(termination)}
    args = [sys.executable, "-m", "inference_pod", "--manifest", manifest, "--device", "cpu",
            "--det-model-name", ocr_models.det_name, "--det-model-dir", str(ocr_models.det_dir),
            "--rec-model-name", ocr_models.rec_name, "--rec-model-dir", str(ocr_models.rec_dir),
            "--page-batch-size", "1", "--grace-seconds", "20"]
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while len(list(out.glob("doc-*.json"))) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no result appeared within 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == exit_codes.INTERRUPTED, output[-3000:]
    first = json.loads(termination.read_bytes())
    assert first["status"] == "interrupted"
    done_first = sorted(p.name for p in out.glob("doc-*.json"))
    assert 2 <= len(done_first) < 10
    for path in out.glob("doc-*.json"):
        assert json.loads(path.read_text())["status"] == "ok"  # nothing half-written
    assert not list(out.rglob(".ocrjob-tmp-*"))
    assert json.loads((out / "aaa-broken.png.json").read_text())["error"]["code"] == "corrupt"
    code, summary = run_shard(make_config(ocr_models, manifest))
    assert code == exit_codes.SUCCEEDED
    assert summary["items"]["skipped"] == len(done_first) + 1
    assert summary["items"]["ok"] == 10 - len(done_first)
    assert len(list(out.glob("doc-*.json"))) == 10
    # The error found by the interrupted attempt is still reported (what `ocrjob retry` works from).
    assert summary["items"]["failed_earlier"] == 1
    assert [(e["key"], e["code"], e.get("earlier")) for e in summary["errors"]] == [("aaa-broken.png", "corrupt", True)]


def test_two_workers_per_device_are_spawned_while_the_parent_has_paddle_imported(tmp_path, ocr_models) -> None:
    import paddle  # noqa: F401  — the parent has Paddle loaded: a forked worker would inherit it and refuse

    assert "paddle" in sys.modules
    src, out = tmp_path / "in", tmp_path / "out"
    expected = generate_corpus(src, 4, seed=3)
    plan = plan_local(src, out, "job-two")
    code, summary = run_shard(
        make_config(ocr_models, str(out / manifest_key(plan, 0)), workers_per_device=2,
                    download_threads=2)
    )
    assert code == exit_codes.SUCCEEDED, summary["message"]
    assert summary["items"]["ok"] == 4 and len(summary["devices"]) == 2
    workers = {json.loads((out / layout.result_key(n)).read_text())["worker"] for n in expected}
    assert workers <= {0, 1}


def test_gpu_requested_without_a_gpu_is_a_clear_error_not_a_cpu_fallback(tmp_path, ocr_models) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    generate_corpus(src, 1, seed=1)
    plan = plan_local(src, out, "job-gpu")
    manifest = str(out / manifest_key(plan, 0))
    # The CPU build here cannot serve a GPU on any node (not retried); a wrong GPU count may be the node's (retried).
    cases = ((None, "no CUDA support", exit_codes.DEVICE_UNSUPPORTED),
             ("", "hides every GPU", exit_codes.DEVICE_UNAVAILABLE),
             ("0,1", "exactly one visible GPU", exit_codes.DEVICE_UNAVAILABLE))
    for visible, phrase, code in cases:
        env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        env["OCRJOB_TERMINATION_LOG"] = str(tmp_path / "term")
        result = subprocess.run(
            [sys.executable, "-m", "inference_pod", "--manifest", manifest, "--device", "gpu",
             "--det-model-name", ocr_models.det_name, "--det-model-dir", str(ocr_models.det_dir),
             "--rec-model-name", ocr_models.rec_name, "--rec-model-dir", str(ocr_models.rec_dir)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == code, result.stderr[-2000:]
        assert phrase in json.loads((tmp_path / "term").read_text())["message"]
    assert not list(out.glob("*.json")), "no result may be written when the device is wrong"


@pytest.mark.s3
def test_shard_reads_and_writes_s3(s3_server, s3_bucket, s3_environ, ocr_models, tmp_path) -> None:
    client = s3_server.client()
    expected = {}
    for index, words in enumerate((["Harbor", "Station"], ["Garden", "Window"])):
        buffer = io.BytesIO()
        render_page([" ".join(words)], size=(700, 300)).save(buffer, "PNG")
        client.put_object(Bucket=s3_bucket, Key=f"docs/in/p{index}.png", Body=buffer.getvalue())
        expected[f"p{index}.png"] = words
    client.put_object(Bucket=s3_bucket, Key="docs/in/broken.pdf", Body=b"%PDF-1.4 broken")
    # The models come from the bucket too, as users' own PP-OCRv5 models would: downloaded once per pod.
    for kind, folder in (("det", ocr_models.det_dir), ("rec", ocr_models.rec_dir)):
        for path in folder.iterdir():
            client.put_object(Bucket=s3_bucket, Key=f"models/{kind}/{path.name}", Body=path.read_bytes())
    s3_models = ModelSource(
        ocr_models.det_name, f"s3://{s3_bucket}/models/det", ocr_models.rec_name, f"s3://{s3_bucket}/models/rec"
    )
    settings = S3Settings(endpoint_url=s3_server.endpoint, region="us-east-1")
    source = open_storage(f"s3://{s3_bucket}/docs/in", settings)
    dest = open_storage(f"s3://{s3_bucket}/docs/out", settings)
    plan = make_plan("job-s3", source.uri, dest.uri, source, dest, ShardingPolicy(shard_count=1))
    manifest = f"{dest.uri}/{manifest_key(plan, 0)}"
    config = replace(make_config(ocr_models, manifest, s3=settings), models=s3_models,
                     model_cache_dir=tmp_path / "model-cache")
    code, summary = run_shard(config)
    assert code == exit_codes.SUCCEEDED, summary["message"]
    downloaded = sorted(p.name for p in (tmp_path / "model-cache").rglob("inference.pdiparams"))
    assert len(downloaded) == 2, "both model directories are downloaded into the pod's cache"
    assert summary["items"]["ok"] == 2 and summary["items"]["failed"] == 1
    for name, words in expected.items():
        record = json.loads(dest.get(layout.result_key(name)))
        assert set(words) <= words_of(record)
        assert record["source"]["uri"] == f"s3://{s3_bucket}/docs/in/{name}"
    assert json.loads(dest.get("broken.pdf.json"))["error"]["code"] == "corrupt"
    assert json.loads(dest.get(layout.shard_summary_key("job-s3", 0)))["status"] == "succeeded"


def filer_read_only(server, prefixes: list[str]) -> None:
    """Make these filer paths read-only on the real SeaweedFS (its per-path `filer.conf`, which the filer
    watches): an S3 PUT below one fails with a 500 (after the client's retries), as a broken store would."""
    import urllib.request

    conf = json.dumps({"version": 0, "locations": [{"locationPrefix": p, "readOnly": True} for p in prefixes]})
    request = urllib.request.Request(f"http://127.0.0.1:{server.ports['filer']}/etc/seaweedfs/filer.conf",
                                     data=conf.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=10):
        pass
    time.sleep(1.0)  # the filer reloads it from its own change feed


@pytest.mark.s3
def test_a_shard_that_cannot_write_its_summary_fails_and_its_results_stay(s3_server, s3_bucket, s3_environ,
                                                                            ocr_models, tmp_path) -> None:
    from inference_pod.job.errors import StorageUnavailable
    from inference_pod.job.summary import NO_SUMMARY

    client = s3_server.client()
    for index, word in enumerate(("Harbor", "Garden")):
        buffer = io.BytesIO()
        render_page([word], size=(600, 300)).save(buffer, "PNG")
        client.put_object(Bucket=s3_bucket, Key=f"docs/in/p{index}.png", Body=buffer.getvalue())
    client.put_object(Bucket=s3_bucket, Key="docs/in/broken.pdf", Body=b"%PDF-1.4 broken")
    settings = S3Settings(endpoint_url=s3_server.endpoint, region="us-east-1")
    source = open_storage(f"s3://{s3_bucket}/docs/in", settings)
    dest = open_storage(f"s3://{s3_bucket}/docs/out", settings)
    plan = make_plan("job-lost", source.uri, dest.uri, source, dest, ShardingPolicy(shard_count=1))
    config = make_config(ocr_models, f"{dest.uri}/{manifest_key(plan, 0)}", s3=settings,
                         termination_log=str(tmp_path / "term"))
    summaries = f"/buckets/{s3_bucket}/docs/out/{layout.job_dir('job-lost')}/summaries/"
    filer_read_only(s3_server, [summaries])
    try:
        code, summary = run_shard(config)
    finally:
        filer_read_only(s3_server, [])
    expected = exit_codes.for_storage_error(StorageUnavailable(""))
    assert code == expected == exit_codes.STORAGE_UNAVAILABLE, summary["message"]
    assert summary["status"] == "failed" and "shard summary could not be written" in summary["message"]
    term = json.loads((tmp_path / "term").read_text())
    assert (term["status"], term["exit_code"]) == ("failed", exit_codes.STORAGE_UNAVAILABLE)
    assert not dest.exists(layout.shard_summary_key("job-lost", 0))
    results = {key: json.loads(dest.get(key))["status"] for key in ("p0.png.json", "p1.png.json", "broken.pdf.json")}
    assert results == {"p0.png.json": "ok", "p1.png.json": "ok", "broken.pdf.json": "error"}
    # The job summary counts what is stored: nothing is pending although the shard summary is missing.
    job = write_job_summary(dest, "job-lost")
    assert (job["items"]["ok"], job["items"]["failed"], job["items"]["pending"]) == (2, 1, 0)
    assert job["shards"][0]["status"] == NO_SUMMARY and [e["key"] for e in job["failed_items"]] == ["broken.pdf"]
    # The retry resumes: it skips every result, keeps the earlier error, and now writes its summary.
    code, summary = run_shard(config)
    assert code == exit_codes.SUCCEEDED, summary["message"]
    assert summary["items"]["skipped"] == 3 and summary["items"]["failed_earlier"] == 1
    job = write_job_summary(dest, "job-lost")
    assert (job["items"]["ok"] + job["items"]["skipped"], job["items"]["failed"], job["items"]["pending"]) == (2, 1, 0)
    assert job["status"] == "succeeded" and job["shards"][0]["status"] == "succeeded"
