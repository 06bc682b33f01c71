"""`ocrjob run`: the same planner and loader as the cluster, on one machine.

The plan goes to the output location like a cluster job's (a re-run with the same input and output
continues it). Each device slot runs one shard at a time in its own `spawn`ed process — the very
coordinator a shard pod runs — so a slot never shares a device with another. Children's logs go to
files under the cache so the progress bar stays readable.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from inference_pod.job import exit_codes, layout, records
from inference_pod.job.plan import InputManifest, ShardingPolicy, check_locations, plan_job
from inference_pod.job.shard_records import ShardSummary, no_text_note
from inference_pod.job.storage import Storage, open_storage
from inference_pod.job.summary import NO_SUMMARY, write_job_summary
from inference_pod.models import default_cache_dir
from inference_pod.shard.config import LoaderConfig
from inference_pod.shard.messages import Outcome, ShardProgress

log = logging.getLogger("ocrjob.runner")
FAILED_SHOWN = 10  # failed documents printed at the end of a run; the summary says where the rest are


class DevicesError(ValueError):
    pass


def parse_devices(spec: str) -> list[str]:
    """'cpu' → [cpu]; 'cpu:N' → N cpu slots; 'gpu' → [gpu]; 'gpu:0,1' → [gpu:0, gpu:1]."""
    value = spec.strip().lower()
    if value == "cpu":
        return ["cpu"]
    if value.startswith("cpu:") and value[4:].isdigit() and 1 <= int(value[4:]) <= 64:
        return ["cpu"] * int(value[4:])
    if value == "gpu":
        return ["gpu"]
    if value.startswith("gpu:"):
        ids = [part.strip() for part in value[4:].split(",")]
        if ids and all(part.isdigit() for part in ids) and len(set(ids)) == len(ids):
            return [f"gpu:{part}" for part in ids]
    raise DevicesError(
        f"--devices {spec!r} is not understood: use cpu, cpu:N (N processes on the CPU), gpu, or gpu:0,1,... "
        "(one process per listed GPU, each seeing only its own)"
    )


def local_job_id(input_uri: str, output_uri: str) -> str:
    """Deterministic, so re-running the same command resumes instead of re-planning."""
    digest = hashlib.sha256(f"{input_uri}\n{output_uri}".encode()).hexdigest()[:12]
    return f"local-{digest}"


@dataclass
class RunResult:
    exit_code: int
    job_id: str
    summary: dict | None
    log_dir: Path


def shard_log(log_dir: Path, shard: int) -> Path:
    return log_dir / f"shard-{shard:05d}.log"


def _slot_main(config: LoaderConfig, progress: Any, log_path: str) -> None:
    """A slot process: logs to a file, then runs the shard coordinator exactly as a pod would."""
    from inference_pod.shard.coordinator import run_shard

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    code, _ = run_shard(config, progress=progress)
    sys.exit(code)


def run_local(
    input_uri: str,
    output_uri: str,
    devices: str,
    base_config: LoaderConfig,
    policy: ShardingPolicy | None = None,
    job_id: str | None = None,
    input_manifest: InputManifest | None = None,
    console: Console | None = None,
) -> RunResult:
    console = console or Console(stderr=True)
    slots = parse_devices(devices)
    check_locations(input_uri, output_uri)
    job_id = job_id or local_job_id(input_uri, output_uri)
    source, dest = open_storage(input_uri, base_config.s3), open_storage(output_uri, base_config.s3)
    plan = plan_job(
        job_id, input_uri, output_uri, source, dest, policy or ShardingPolicy(shard_count=len(slots)), input_manifest
    )
    skipped = plan.skipped["unsupported"]
    console.print(
        f"[bold]{job_id}[/]: {plan.item_count} documents in {plan.shard_count} shard(s) on {len(slots)} "
        f"slot(s) {slots}; {skipped['count']} unsupported object(s) not planned"
        + (f" (e.g. {', '.join(skipped['examples'][:3])})" if skipped["count"] else "")
    )
    cpu_slots = slots.count("cpu")
    if cpu_slots > 1:  # slots sharing the CPU split its threads
        threads = max(1, base_config.ocr.cpu_threads // cpu_slots)
        base_config = replace(base_config, ocr=replace(base_config.ocr, cpu_threads=threads))
    log_dir = default_cache_dir() / "logs" / job_id
    log_dir.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    progress_q = ctx.Queue()
    waiting = [shard.index for shard in plan.shards]
    manifests = {shard.index: shard.manifest for shard in plan.shards}  # the plan's entry names each manifest
    running: dict[str, tuple[int, Any]] = {}  # slot id → (shard, process)
    codes: dict[int, int] = {}
    interrupted = False

    def on_stop(*_: Any) -> None:
        nonlocal interrupted
        interrupted = True

    # Ctrl-C reaches the children too (same process group); they stop themselves gracefully.
    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = Progress(
        TextColumn("[bold]OCR"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )
    counts = dict.fromkeys(Outcome, 0)
    started = time.monotonic()
    deadline: float | None = None
    try:
        with bar:
            task = bar.add_task("ocr", total=plan.item_count, detail="")
            while waiting or running:
                for slot_id, device in enumerate(slots):
                    key = f"{slot_id}"
                    if key in running or not waiting or interrupted:
                        continue
                    shard = waiting.pop(0)
                    manifest_uri = f"{dest.uri.rstrip('/')}/{manifests[shard]}"
                    config = replace(base_config, manifest=manifest_uri, device=device, termination_log=None)
                    proc = ctx.Process(
                        target=_slot_main, name=f"ocrjob-slot-{slot_id}",
                        args=(config, progress_q, str(shard_log(log_dir, shard))),
                    )
                    proc.start()
                    running[key] = (shard, proc)
                _drain(progress_q, counts, bar, task, started)
                for key, (shard, proc) in list(running.items()):
                    if not proc.is_alive():
                        proc.join(timeout=1)
                        codes[shard] = proc.exitcode if proc.exitcode is not None else exit_codes.SYSTEMIC
                        del running[key]
                if interrupted and deadline is None:
                    deadline = time.monotonic() + base_config.grace_seconds + 15
                    console.print("[yellow]stopping: letting each slot finish its batch and flush its uploads…")
                    for _, proc in running.values():
                        if proc.pid:
                            os.kill(proc.pid, signal.SIGINT)
                    waiting.clear()
                if deadline is not None and time.monotonic() > deadline:
                    for _, proc in running.values():
                        proc.kill()
                time.sleep(0.1)
            _drain(progress_q, counts, bar, task, started)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for _, proc in running.values():
            proc.kill()
            proc.join(timeout=5)
    summary = write_job_summary(dest, job_id)
    print_summary(console, summary, codes, log_dir, failure_messages(dest, job_id, codes))
    if interrupted:
        return RunResult(exit_codes.INTERRUPTED, job_id, summary, log_dir)
    failed = sorted(code for code in codes.values() if code != exit_codes.SUCCEEDED)
    return RunResult(failed[-1] if failed else exit_codes.SUCCEEDED, job_id, summary, log_dir)


def _drain(progress_q: Any, counts: dict[Outcome, int], bar: Progress, task: Any, started: float) -> None:
    while True:
        try:
            message: ShardProgress = progress_q.get_nowait()
        except queue.Empty:
            break
        counts[message.item.outcome] += 1
        ok, failed, skipped = counts[Outcome.OK], counts[Outcome.FAILED], counts[Outcome.SKIPPED]
        rate = (ok + failed) / max(time.monotonic() - started, 1e-6)
        bar.update(task, advance=1, detail=f"ok {ok} · failed {failed} · skipped {skipped} · {rate:.2f}/s")


def failure_messages(dest: Storage, job_id: str, codes: dict[int, int]) -> dict[int, str]:
    """Why each failed shard ended, from its shard summary: the loader's message says what to fix."""
    messages = {}
    for shard, code in codes.items():
        record = None if code == exit_codes.SUCCEEDED else records.read(
            dest, layout.shard_summary_key(job_id, shard), ShardSummary)
        if record is not None and record.message:
            messages[shard] = record.message
    return messages


def print_summary(console: Console, summary: dict, codes: dict[int, int], log_dir: Path,
                  messages: dict[int, str] | None = None) -> None:
    table = Table(title=f"{summary['job_id']} — {summary['status']}")
    for column in ("shard", "status", "device", "items", "seconds", "items/s", "exit"):
        table.add_column(column, justify="right" if column not in ("status", "device") else "left")
    for shard in summary["shards"]:
        devices = shard.get("devices") or [{}]
        device = devices[0].get("name") or devices[0].get("paddle_device") or "-"
        throughput = (shard.get("throughput") or {}).get("items_per_second")
        table.add_row(
            str(shard["index"]), shard["status"], f"{device}×{len(devices)}" if len(devices) > 1 else device,
            str(shard["items"]), f"{shard['seconds'] or 0:.1f}", f"{throughput or 0:.2f}",
            str(codes.get(shard["index"], "-")),
        )
    console.print(table)
    items = summary["items"]
    console.print(
        f"items: [green]{items['ok']} ok[/], [red]{items['failed']} failed[/], {items['skipped']} skipped "
        f"(already done), {items['pending']} pending; pages: {items['pages']}{no_text_note(items)}; "
        f"results in {summary['output']}"
    )
    for failure in summary["failed_items"][:FAILED_SHOWN]:
        console.print(f"  [red]✗[/] {failure['key']}: {failure['code']}: {failure['message']}")
    total = summary.get("failed_items_total", len(summary["failed_items"]))
    if total > FAILED_SHOWN:
        where = (layout.failed_items_dir(summary["job_id"]) + "*.jsonl" if summary.get("failed_items_truncated")
                 else layout.job_summary_key(summary["job_id"]))
        console.print(f"  … {total - FAILED_SHOWN} more; every one in {summary['output'].rstrip('/')}/{where}")
    for shard in summary["shards"]:
        code = codes.get(shard["index"], exit_codes.SUCCEEDED)
        if code != exit_codes.SUCCEEDED and shard["status"] in ("pending", NO_SUMMARY):
            console.print(f"  [red]shard {shard['index']}[/] exited {code} without a shard summary in storage "
                          f"({shard['ok'] + shard['failed']} of {shard['items']} results written and kept; a rerun "
                          f"resumes): see {shard_log(log_dir, shard['index'])}")
    for shard, message in sorted((messages or {}).items()):
        console.print(f"  [red]shard {shard}[/] exited {codes.get(shard)}: {escape(message)}")
    if any(code != exit_codes.SUCCEEDED for code in codes.values()):
        console.print(f"[red]some shards failed[/]: logs in {log_dir}")
