"""OcrJob against the peers a user would pick instead, side by side in one run, on generated document pages
with known text (inference_pod/local/documents.py); writes BENCHMARKS.md.

Systems (each in its own process, one after another, same pages, same cores):
  loader-<engine>-w<N>  OcrJob's loader (run_shard: fetch/decode threads, N predictor processes)
  bare-<engine>         PaddleOCR.predict(path) loop on the PaddleOCR object the loader builds (same options)
  paddleocr-defaults    PaddleOCR.predict(path) with PaddleOCR's own defaults (engine paddle, box unclip 1.5,
                        no side limit); only the offline model dirs given, the optional orientation/unwarping
                        models off (they are not offline) and oneDNN off (Paddle 3.3 cannot run these models with it)
  rapidocr              RapidOCR 1.4.4 (rapidocr-onnxruntime) with its defaults, the same PP-OCRv4 ONNX weights
  tesseract             Tesseract 5 CLI, `-l eng`, default page segmentation
PDFs: the loader renders them itself; the other systems get the pages the loader's decode path renders.

steady  = (pages - 1) / (time of last finished page - time of first)  — model load excluded
overall = pages / (process start to last page)                        — model load included
CPU = the process tree's CPU time during the steady phase / (wall time × cores): 100 % = all cores busy.
Accuracy: CER and WER against the ground truth, lines compared order-independently (accuracy.py).
Run: `make bench` (`python bench/run.py`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")

# Pages per kind (inference_pod.local.documents.KINDS); PDFs hold two pages each.
DEFAULT_PAGES = {"a4-150-clean": 2, "a4-150-two-column": 1, "a4-150-degraded": 2, "a4-300-clean": 1, "pdf-150": 2}


def _parse_kinds(text: str) -> dict[str, int]:
    from inference_pod.local.documents import KINDS

    counts = {}
    for part in text.split(","):
        kind, _, count = part.partition("=")
        if kind not in KINDS:
            raise SystemExit(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
        counts[kind] = int(count or 1)
    return counts


# -- measurements (each runs in a child process: `run.py --measure SYSTEM`) ------------------------------
def _pages(args: argparse.Namespace) -> list[Path]:
    return sorted(p for p in Path(args.pages).rglob("*") if p.suffix in (".png", ".jpg"))


def _texts_of(result: dict) -> list[str]:
    return [str(t) for t in result.get("rec_texts") or []]


def measure_bare(args: argparse.Namespace, engine: str) -> dict:
    from inference_pod.models import default_model_source, resolve_models
    from inference_pod.shard.engine import OcrEngine, OcrOptions

    started = time.time()
    models = resolve_models(default_model_source(), Path(args.workdir) / "model-cache", engine=engine)
    ocr = OcrEngine(models, OcrOptions(engine=engine), "cpu").paddleocr  # the PaddleOCR object the loader builds
    return _loop(started, _pages(args), lambda path: _texts_of(ocr.predict(str(path))[0]))


def measure_paddleocr_defaults(args: argparse.Namespace) -> dict:
    from paddleocr import PaddleOCR

    from inference_pod.models import default_model_source

    started = time.time()
    m = default_model_source()
    ocr = PaddleOCR(text_detection_model_name=m.det_name, text_detection_model_dir=m.det_location,
                    text_recognition_model_name=m.rec_name, text_recognition_model_dir=m.rec_location,
                    use_doc_orientation_classify=False, use_doc_unwarping=False, use_textline_orientation=False,
                    enable_mkldnn=False, device="cpu")
    return _loop(started, _pages(args), lambda path: _texts_of(ocr.predict(str(path))[0]))


def measure_rapidocr(args: argparse.Namespace) -> dict:
    from rapidocr_onnxruntime import RapidOCR

    started = time.time()
    engine = RapidOCR()

    def run(path: Path) -> list[str]:
        result, _ = engine(str(path))
        return [line[1] for line in result or []]

    return _loop(started, _pages(args), run)


def measure_tesseract(args: argparse.Namespace) -> dict:
    started = time.time()

    def run(path: Path) -> list[str]:
        out = subprocess.run(["tesseract", str(path), "stdout", "-l", "eng"], capture_output=True, text=True,
                             check=True, timeout=600)
        return out.stdout.splitlines()

    return _loop(started, _pages(args), run)


def _loop(started: float, pages: list[Path], run) -> dict:
    stamps, texts = [], {}
    for path in pages:
        texts[str(path)] = run(path)
        stamps.append(time.time())
    return {"started": started, "stamps": stamps, "texts": texts}


def measure_loader(args: argparse.Namespace) -> dict:
    from inference_pod.models import default_model_source
    from inference_pod.shard.config import LoaderConfig
    from inference_pod.shard.coordinator import run_shard
    from inference_pod.shard.engine import OcrOptions
    from inference_pod.shard.messages import Outcome

    started = time.time()
    config = LoaderConfig(
        manifest=args.manifest, models=default_model_source(), device="cpu", workers_per_device=args.workers,
        ocr=OcrOptions(engine=args.engine, det_input=args.det_input), termination_log=None,
        model_cache_dir=Path(args.workdir) / "model-cache",
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
                stamps.extend([time.time()] * max(1, message.item.pages or 1))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    code, summary = run_shard(config, progress=progress)
    done.set()
    reader.join(timeout=10)
    if code != 0 or summary.items is None or summary.items.ok != summary.items.total:
        raise SystemExit(f"loader run failed: exit {code}: {summary.message}")
    return {"started": started, "stamps": stamps}


# -- orchestration -----------------------------------------------------------------------------------
def run_measurement(system: str, extra: list[str], workdir: Path) -> dict:
    """Start a measurement child; sample its process tree's RSS and CPU time; return its figures."""
    out = workdir / f"{system}.json"
    cmd = [sys.executable, __file__, "--measure", system, "--workdir", str(workdir), "--result", str(out), *extra]
    proc = subprocess.Popen(cmd, cwd=REPO)
    parent = psutil.Process(proc.pid)
    peak, samples = 0, []  # samples: (time, cumulative CPU seconds of the tree)
    cpu_of: dict[int, float] = {}
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            for p in tree:
                times = p.cpu_times()
                cpu_of[p.pid] = times.user + times.system + times.children_user + times.children_system
            samples.append((time.time(), sum(cpu_of.values())))
        except psutil.Error:
            pass
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"measurement {system} failed with exit code {proc.returncode}")
    figures = json.loads(out.read_text())
    stamps = figures["stamps"]
    n = len(stamps)
    steady = [(t, c) for t, c in samples if stamps[0] <= t <= stamps[-1]]
    cpu = ((steady[-1][1] - steady[0][1]) / ((steady[-1][0] - steady[0][0]) * os.cpu_count())
           if len(steady) > 1 and steady[-1][0] > steady[0][0] else float("nan"))
    return {
        "pages": n,
        "steady_pps": (n - 1) / (stamps[-1] - stamps[0]) if n > 1 and stamps[-1] > stamps[0] else float("nan"),
        "overall_pps": n / (stamps[-1] - figures["started"]),
        "peak_rss_mib": peak / 2**20,
        "cpu": cpu,
        "texts": figures.get("texts"),
    }


def prepare(workdir: Path, counts: dict[str, int]) -> tuple[Path, Path, dict[str, list[str]], dict[str, str]]:
    """The corpus (for the loader), the same pages as images (for the others), ground truth, page -> kind."""
    from inference_pod.local.documents import generate_documents
    from inference_pod.shard.decode import DecodeLimits, open_document

    corpus, pages = workdir / "corpus", workdir / "pages"
    truth = generate_documents(corpus, counts)
    page_truth: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for name, lines in truth.items():
        kind = name.split("/")[0]
        if name.endswith(".pdf"):
            document = open_document((corpus / name).read_bytes(), DecodeLimits())
            from PIL import Image

            for number, array in enumerate(document.pages):
                target = pages / f"{name}-p{number + 1}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(target)
            # The document's truth goes with its first page; its other pages add their text to it.
            page_truth[str(pages / f"{name}-p1.png")] = lines
            kinds[str(pages / f"{name}-p1.png")] = kind
            for number in range(2, document.page_count + 1):
                kinds[str(pages / f"{name}-p{number}.png")] = kind
        else:
            target = pages / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(corpus / name, target)
            page_truth[str(target)] = lines
            kinds[str(target)] = kind
    return corpus, pages, truth, kinds


def accuracy_by_kind(texts: dict[str, list[str]], truth: dict[str, list[str]], kinds: dict[str, str],
                     measure: Callable[[list[str], list[str]], Any] | None = None) -> dict:
    """{kind: ErrorCounts} by `measure` (default: sorted lines); a PDF's pages are joined and compared with the
    document's truth."""
    from inference_pod.local.accuracy import ErrorCounts, errors

    measure = measure or errors

    joined: dict[str, list[str]] = {}
    for page, lines in texts.items():
        key = page.rsplit("-p", 1)[0] + "-p1.png" if ".pdf-p" in page else page
        joined.setdefault(key, []).extend(lines)
    out: dict[str, ErrorCounts] = {}
    for page, reference in truth.items():
        kind = kinds[page]
        out[kind] = out.get(kind, ErrorCounts()) + measure(reference, joined.get(page, []))
    return out


def loader_texts(output: Path, corpus_truth: dict[str, list[str]], pages_dir: Path,
                 text: bool = False) -> dict[str, list[str]]:
    """The loader's recognised lines (its text boxes) per page, keyed like the other systems' pages; with `text`,
    the lines of the pages' `text` instead (what users read, in reading order)."""
    from inference_pod.job import layout

    texts = {}
    for name in corpus_truth:
        record = json.loads((output / layout.result_key(name)).read_text(encoding="utf-8"))
        if text:
            lines = [line for page in record["pages"] for line in page["text"].splitlines()]
        else:
            lines = [line["text"] for page in record["pages"] for line in page["lines"]]
        texts[str(pages_dir / (f"{name}-p1.png" if name.endswith(".pdf") else name))] = lines
    return texts


def loader_accuracy(output: Path, truth: dict[str, list[str]], pages_dir: Path, page_truth: dict[str, list[str]],
                    kinds: dict[str, str]) -> tuple[dict, dict]:
    """The loader's {kind: ErrorCounts} of its boxes (matched to the truth in any order) and of its pages' text
    (in reading order): a reading-order regression shows as the gap between the two."""
    from inference_pod.local.accuracy import box_errors, text_errors

    boxes = accuracy_by_kind(loader_texts(output, truth, pages_dir), page_truth, kinds, box_errors)
    text = accuracy_by_kind(loader_texts(output, truth, pages_dir, text=True), page_truth, kinds,
                            lambda ref, hyp: text_errors(ref, "\n".join(hyp)))
    return boxes, text


SYSTEMS = {  # key -> (table label, measure kind, extra args)
    "loader-onnxruntime-w1": ("OcrJob loader, onnxruntime, 1 worker (default)", "loader",
                              ["--engine", "onnxruntime", "--workers", "1"]),
    "loader-onnxruntime-w1-plain": ("OcrJob loader, onnxruntime, 1 worker, plain detection input", "loader",
                                    ["--engine", "onnxruntime", "--workers", "1", "--det-input", "plain"]),
    "loader-onnxruntime-w2": ("OcrJob loader, onnxruntime, 2 workers", "loader",
                              ["--engine", "onnxruntime", "--workers", "2"]),
    "bare-onnxruntime": ("bare `PaddleOCR.predict`, as the loader builds it, onnxruntime", "bare-onnxruntime", []),
    "loader-paddle-w1": ("OcrJob loader, paddle, 1 worker", "loader", ["--engine", "paddle", "--workers", "1"]),
    "bare-paddle": ("bare `PaddleOCR.predict`, as the loader builds it, paddle", "bare-paddle", []),
    "paddleocr-defaults": ("bare `PaddleOCR.predict`, PaddleOCR's defaults (paddle)", "paddleocr-defaults", []),
    "rapidocr": ("RapidOCR 1.4.4 (onnxruntime), defaults", "rapidocr", []),
    "tesseract": ("Tesseract 5 (`-l eng`)", "tesseract", []),
}


def orchestrate(args: argparse.Namespace) -> None:
    from inference_pod.job.plan import ShardingPolicy, make_plan, manifest_key
    from inference_pod.job.storage import LocalStorage

    workdir = Path(args.workdir).absolute()
    shutil.rmtree(workdir, ignore_errors=True)
    base = _parse_kinds(args.kinds) if args.kinds else DEFAULT_PAGES
    counts = {k: v * args.scale for k, v in base.items()}
    corpus, pages_dir, truth, kinds = prepare(workdir, counts)
    page_truth = {str(pages_dir / (f"{n}-p1.png" if n.endswith(".pdf") else n)): lines for n, lines in truth.items()}
    print(f"corpus: {len(kinds)} pages in {corpus}", flush=True)
    rows: dict[str, dict] = {}
    selected = args.systems.split(",") if args.systems else list(SYSTEMS)
    for system in selected:
        _, kind, extra = SYSTEMS[system]
        if kind == "loader":
            out = workdir / f"out-{system}"
            stored = make_plan(system, str(corpus), str(out), LocalStorage(corpus), LocalStorage(out),
                               ShardingPolicy(shard_count=1))
            extra = [*extra, "--manifest", f"{out}/{manifest_key(stored, 0)}"]
        else:
            extra = [*extra, "--pages", str(pages_dir)]
        print(f"measuring {system} …", flush=True)
        row = run_measurement(kind, extra, workdir)
        if kind == "loader":
            row.pop("texts", None)
            row["accuracy"], row["text_accuracy"] = loader_accuracy(workdir / f"out-{system}", truth, pages_dir,
                                                                    page_truth, kinds)
        else:
            row["accuracy"] = accuracy_by_kind(row.pop("texts"), page_truth, kinds)
        rows[system] = row
        summary = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                   if not k.endswith("accuracy")}
        print(f"  {system}: {summary}", flush=True)
    write_report(rows, counts, len(kinds), Path(args.output), " ".join(sys.argv[1:]))


def write_report(rows: dict[str, dict], counts: dict[str, int], pages: int, output: Path, argv: str) -> None:
    from inference_pod.local.documents import available_fonts

    kinds = list(counts)
    load = os.getloadavg()
    lines = [
        "# Benchmarks",
        "",
        f"Made by `make bench` (`python bench/run.py{' ' + argv if argv else ''}`) on "
        f"{time.strftime('%Y-%m-%d %H:%M')}, "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, CPU only (PaddleOCR {_version('paddleocr')}, Paddle "
        f"{_version('paddlepaddle')}, ONNX Runtime {_version('onnxruntime')}, RapidOCR "
        f"{_version('rapidocr-onnxruntime')}, {_tesseract_version()}; PP-OCRv4 mobile det+rec).",
        f"Load average at the end of the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min; "
        "other jobs shared this machine: the ratios side by side in this one run are what counts).",
        f"{pages} generated pages with known text (inference_pod/local/documents.py; fonts: "
        f"{', '.join(Path(f).stem for f in available_fonts()) or 'none'} + Pillow's own), per kind: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + ". A4 = 1240×1754 px at 150 dpi, 2480×3508 at 300; 30-50 lines each; degraded = rotated ±1-2°, "
        "blur, noise, JPEG q60; pdf-150 = 2-page PDFs rendered by the loader.",
        "",
        "Each system ran alone in its own process, one after another, on the same pages. steady = pages/s between "
        "the first and last finished page (start-up excluded); overall = pages/s from process start; CPU = share of "
        "all cores busy during the steady phase; peak RSS of the whole process tree.",
        "",
        "| system | steady pages/s | overall pages/s | CPU | peak RSS MiB | CER | WER |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in rows.items():
        total = sum(row["accuracy"].values(), start=type(next(iter(row["accuracy"].values())))())
        lines.append(f"| {SYSTEMS[key][0]} | {row['steady_pps']:.3f} | {row['overall_pps']:.3f} | "
                     f"{row['cpu'] * 100:.0f} % | {row['peak_rss_mib']:.0f} | {total.cer:.3f} | {total.wer:.3f} |")
    lines += ["", "Accuracy per page kind (CER / WER):", "",
              "| system | " + " | ".join(kinds) + " |", "| --- |" + " ---: |" * len(kinds)]
    for key, row in rows.items():
        acc = row["accuracy"]
        lines.append(f"| {SYSTEMS[key][0]} | " + " | ".join(
            f"{acc[k].cer:.3f} / {acc[k].wer:.3f}" if k in acc else "—" for k in kinds) + " |")
    lines += ["", "The loader per page kind: its boxes (matched to the truth in any order) and its pages' `text` (in "
              "reading order, what users read); the gap between them is what the reading order lost. "
              "box CER | text CER / text WER:", "",
              "| system | " + " | ".join(kinds) + " |", "| --- |" + " ---: |" * len(kinds)]
    for key, row in rows.items():
        if "text_accuracy" in row:
            box, text = row["accuracy"], row["text_accuracy"]
            lines.append(f"| {SYSTEMS[key][0]} | " + " | ".join(
                f"{box[k].cer:.3f} \\| {text[k].cer:.3f} / {text[k].wer:.3f}" if k in box else "—" for k in kinds)
                + " |")
    ratios = []
    for engine in ("onnxruntime", "paddle"):
        loader, bare = rows.get(f"loader-{engine}-w1"), rows.get(f"bare-{engine}")
        if loader and bare:
            ratios.append(f"{engine} {loader['steady_pps'] / bare['steady_pps']:.3f}")
    peers = [rows[k]["steady_pps"] for k in ("rapidocr", "tesseract", "paddleocr-defaults") if k in rows]
    default = rows.get("loader-onnxruntime-w1")
    lines += ["", f"loader ÷ bare (steady, local files, 1 worker): {', '.join(ratios) or '—'} (target ≥ 0.95)."]
    if default and peers:
        lines.append(f"OcrJob default ÷ fastest peer (steady): {default['steady_pps'] / max(peers):.3f}.")
    lines.append("")
    output.write_text("\n".join(lines))
    print("\n".join(lines))


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _tesseract_version() -> str:
    try:
        out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0].replace("tesseract", "Tesseract")
    except (OSError, IndexError, subprocess.SubprocessError):
        return "Tesseract ?"


def main() -> None:
    from inference_pod.job import settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1, help="multiply the pages of each kind")
    parser.add_argument("--kinds", help="pages per kind instead of the default set, e.g. line-300-tight=12")
    parser.add_argument("--systems", help=f"comma-separated subset of {', '.join(SYSTEMS)}")
    parser.add_argument("--workdir", default=str(REPO / ".bench"))
    parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--pages", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="onnxruntime", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--det-input", default=settings.default("det_input"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measures = {"loader": measure_loader, "bare-onnxruntime": lambda a: measure_bare(a, "onnxruntime"),
                    "bare-paddle": lambda a: measure_bare(a, "paddle"),
                    "paddleocr-defaults": measure_paddleocr_defaults,
                    "rapidocr": measure_rapidocr, "tesseract": measure_tesseract}
        Path(args.result).write_text(json.dumps(measures[args.measure](args)))
        return
    orchestrate(args)


if __name__ == "__main__":
    main()
