"""Loader throughput vs. a bare PaddleOCR loop, side by side in one run; writes BENCHMARKS.md.

Each configuration runs in its own process so its peak memory (RSS of the whole process tree, sampled
every 0.1 s) is its own. Throughput is measured two ways, the same way for every configuration:
  steady  = (N - 1) / (time of last finished image - time of first finished image)  — model load excluded
  overall = N / (wall time from process start to last image)                         — model load included
Run: `make bench` (or `python bench/run.py --images 100`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
PAGE = (640, 360)  # pixels: a small document page keeps 100+ images within minutes on a CPU


# -- measurements (each runs in a child process: `run.py --measure KIND`) --------------------------------
def measure_bare(args: argparse.Namespace) -> dict:
    """The baseline: PaddleOCR.predict(path) over the files, one by one, same models and options."""
    from inference_pod.models import default_model_source, resolve_models
    from inference_pod.shard.engine import OcrEngine, OcrOptions

    started = time.time()
    models = resolve_models(default_model_source(), Path(args.workdir) / "model-cache")
    ocr = OcrEngine(models, OcrOptions(), "cpu").paddleocr  # the same PaddleOCR object the loader builds
    files = sorted(p for p in Path(args.corpus).iterdir() if p.suffix in (".png", ".jpg"))
    stamps = []
    for path in files:
        ocr.predict(str(path))
        stamps.append(time.time())
    return {"started": started, "stamps": stamps}


def measure_loader(args: argparse.Namespace) -> dict:
    from inference_pod.job.storage import S3Settings
    from inference_pod.models import default_model_source
    from inference_pod.shard.config import LoaderConfig
    from inference_pod.shard.coordinator import run_shard
    from inference_pod.shard.messages import Outcome

    started = time.time()
    config = LoaderConfig(
        manifest=args.manifest, models=default_model_source(), workers_per_device=args.workers,
        termination_log=None, model_cache_dir=Path(args.workdir) / "model-cache",
        s3=S3Settings(endpoint_url=args.endpoint, region="us-east-1") if args.endpoint else S3Settings(),
    )
    progress = multiprocessing.get_context("spawn").Queue()
    stamps: list[float] = []
    done = threading.Event()

    def drain() -> None:
        while not done.is_set() or not progress.empty():
            try:
                message = progress.get(timeout=0.1)
            except queue.Empty:
                continue
            if message.item.outcome is Outcome.OK:
                stamps.append(time.time())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    code, summary = run_shard(config, progress=progress)
    done.set()
    reader.join(timeout=10)
    if code != 0 or summary.items is None or summary.items.ok != summary.items.total:
        raise SystemExit(f"loader run failed: exit {code}: {summary.message}")
    return {"started": started, "stamps": stamps}


# -- orchestration -----------------------------------------------------------------------------------
def run_measurement(kind: str, extra: list[str], workdir: Path) -> dict:
    """Start a measurement child, sample its process tree's RSS, return its figures."""
    out = workdir / f"{kind}.json"
    cmd = [sys.executable, __file__, "--measure", kind, "--workdir", str(workdir), "--result", str(out), *extra]
    proc = subprocess.Popen(cmd, cwd=REPO)
    peak = 0
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"measurement {kind} failed with exit code {proc.returncode}")
    figures = json.loads(out.read_text())
    stamps = figures["stamps"]
    n = len(stamps)
    return {
        "images": n,
        "steady_ips": (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else float("nan"),
        "overall_ips": n / (stamps[-1] - figures["started"]),
        "peak_rss_mib": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--workdir", default=str(REPO / ".bench"))
    parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        figures = measure_bare(args) if args.measure == "bare" else measure_loader(args)
        Path(args.result).write_text(json.dumps(figures))
        return
    orchestrate(args)


def orchestrate(args: argparse.Namespace) -> None:
    import shutil

    from inference_pod.job.plan import ShardingPolicy, make_plan, manifest_key
    from inference_pod.job.storage import LocalStorage, S3Settings, open_storage
    from inference_pod.local.samples import generate_corpus
    from tests.support.seaweedfs import SeaweedFS

    workdir = Path(args.workdir).absolute()
    shutil.rmtree(workdir, ignore_errors=True)
    corpus = workdir / "corpus"
    generate_corpus(corpus, args.images, seed=2026, size=PAGE)
    files = sorted(p for p in corpus.iterdir() if p.suffix in (".png", ".jpg"))
    print(f"corpus: {len(files)} generated document images in {corpus}", flush=True)
    rows: dict[str, dict] = {}
    seaweed = SeaweedFS.start(workdir / "seaweedfs")
    try:
        seaweed.create_bucket("bench")
        client = seaweed.client()
        for path in files:
            client.put_object(Bucket="bench", Key=f"in/{path.name}", Body=path.read_bytes())
        os.environ.update(seaweed.env())
        settings = S3Settings(endpoint_url=seaweed.endpoint, region="us-east-1")

        def plan(name: str, input_uri: str, output_uri: str, source, dest) -> str:
            stored = make_plan(name, input_uri, output_uri, source, dest, ShardingPolicy(shard_count=1))
            return f"{output_uri.rstrip('/')}/{manifest_key(stored, 0)}"

        local = [(f"local-w{w}", w, plan(f"local-w{w}", str(corpus), str(workdir / f"out-w{w}"),
                                         LocalStorage(corpus), LocalStorage(workdir / f"out-w{w}")), None)
                 for w in (1, 2)]
        s3_in, s3_out = open_storage("s3://bench/in", settings), open_storage("s3://bench/out", settings)
        remote = ("s3-w1", 1, plan("s3-w1", s3_in.uri, s3_out.uri, s3_in, s3_out), seaweed.endpoint)
        order = [("bare", None, None, None), local[0], remote, ("bare-again", None, None, None), local[1]]
        for kind, workers, manifest, endpoint in order:
            print(f"measuring {kind} …", flush=True)
            if workers is None:
                extra = ["--corpus", str(corpus)]
            else:
                extra = ["--manifest", manifest, "--workers", str(workers)]
            if endpoint:
                extra += ["--endpoint", endpoint]
            rows[kind] = run_measurement("bare" if workers is None else "loader", extra, workdir)
            print(f"  {kind}: {rows[kind]}", flush=True)
    finally:
        seaweed.stop()
    write_report(rows, len(files), Path(args.output))


def write_report(rows: dict[str, dict], images: int, output: Path) -> None:
    bare = (rows["bare"]["steady_ips"] + rows["bare-again"]["steady_ips"]) / 2
    bare_overall = (rows["bare"]["overall_ips"] + rows["bare-again"]["overall_ips"]) / 2
    labels = {
        "bare": "bare `PaddleOCR.predict(path)` loop (1st)",
        "local-w1": "loader, local files, 1 worker",
        "s3-w1": "loader, SeaweedFS S3, 1 worker",
        "bare-again": "bare `PaddleOCR.predict(path)` loop (2nd)",
        "local-w2": "loader, local files, 2 workers per device",
    }
    lines = [
        "# Benchmarks",
        "",
        f"Made by `make bench` (`python bench/run.py --images {images}`) on {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, CPU only (Paddle "
        f"{_version('paddlepaddle')}, PaddleOCR {_version('paddleocr')}, PP-OCRv4 mobile det+rec).",
        f"{images} generated document images ({PAGE[0]}×{PAGE[1]} px, 3–5 lines of words), one shard, device `cpu`.",
        "Configurations ran one after another in one run; the bare loop ran before and after the loader",
        "runs and its mean is the reference, so machine noise shows up as the gap between its two runs.",
        "",
        "steady = images/s between the first and the last finished image (model load excluded);",
        "overall = images/s from process start (model load included). Peak RSS: whole process tree.",
        "",
        "| configuration | steady img/s | ÷ bare | overall img/s | ÷ bare | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in labels.items():
        row = rows[key]
        lines.append(
            f"| {label} | {row['steady_ips']:.3f} | {row['steady_ips'] / bare:.3f} | {row['overall_ips']:.3f} | "
            f"{row['overall_ips'] / bare_overall:.3f} | {row['peak_rss_mib']:.0f} |"
        )
    w1, w2 = rows["local-w1"]["steady_ips"], rows["local-w2"]["steady_ips"]
    lines += [
        "",
        f"Target: loader ÷ bare ≥ 0.95 (all I/O hidden behind inference). Local: "
        f"{rows['local-w1']['steady_ips'] / bare:.3f}; SeaweedFS: {rows['s3-w1']['steady_ips'] / bare:.3f}.",
        f"workers_per_device 2 vs 1 on this CPU: {w2 / w1:.3f}× (each worker gets half the cores' threads).",
        "",
    ]
    output.write_text("\n".join(lines))
    print("\n".join(lines))


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
