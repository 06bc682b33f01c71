"""The shard coordinator: what a shard pod (and each local slot) runs.

It never imports Paddle. It reads the shard manifest, resolves the models once (a download into the
pod's cache when they live on S3), then starts `workers_per_device` worker processes with the `spawn`
start method; each pins the device and owns one predictor. The coordinator feeds them items, counts
their outcomes, writes a heartbeat every few seconds, turns SIGTERM/SIGINT into a clean stop within
the grace period, and finally writes the shard summary to storage and to the termination-message file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import replace
from typing import Any

from inference_pod.job import exit_codes, layout, records
from inference_pod.job.plan_records import Manifest
from inference_pod.job.shard_records import ShardContext, ShardSummary
from inference_pod.job.storage import ObjectNotFound, Storage, StorageError, open_storage, parse_location
from inference_pod.models import ModelError, ModelSpec, resolve_models
from inference_pod.shard import results
from inference_pod.shard.config import LoaderConfig
from inference_pod.shard.device import DeviceError, plan_device
from inference_pod.shard.messages import Exited, Fatal, ItemDone, Ready, ShardProgress

log = logging.getLogger("ocrjob.loader")
POLL = 0.2


class ShardError(Exception):
    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_manifest(uri: str, config: LoaderConfig) -> Manifest:
    parent, name = parse_location(uri).split()
    try:
        return records.load(open_storage(parent.uri, config.s3), name, Manifest)
    except ObjectNotFound as exc:
        raise ShardError(exit_codes.INPUT_ERROR, f"shard manifest {uri} does not exist: {exc}") from exc
    except records.RecordError as exc:
        raise ShardError(exit_codes.INPUT_ERROR, f"shard manifest {uri} is not usable: {exc}") from exc


class Coordinator:
    def __init__(self, config: LoaderConfig, manifest: Manifest, models: ModelSpec, progress: Any = None) -> None:
        self.config, self.manifest, self.models, self.progress = config, manifest, models, progress
        self.items = manifest.items
        self.tally = results.ShardTally(total=len(self.items))
        self.dest: Storage = open_storage(manifest.output, config.s3)
        self.job_id, self.shard = manifest.job_id, manifest.shard_index
        self.devices: dict[int, dict] = {}
        self.models_used: dict = {}
        self.stop_requested = threading.Event()
        self.started = time.time()

    def _context(self) -> ShardContext:
        return ShardContext(
            tuple(self.devices[k] for k in sorted(self.devices)), self.models_used, self.config.workers_per_device,
            os.environ.get("OCRJOB_ATTEMPT"), os.environ.get("POD_NAME"),
        )

    def _heartbeat(self, state: str) -> None:
        record = results.progress_record(self.job_id, self.shard, state, self.tally, self.started, self._context())
        try:
            self.dest.put(layout.progress_key(self.job_id, self.shard), records.encode(record.to_dict()))
        except StorageError as exc:
            log.warning("heartbeat not written: %s", exc)

    def _heartbeats(self, done: threading.Event) -> None:
        while not done.wait(self.config.heartbeat_seconds):
            self._heartbeat("running")

    def run(self) -> tuple[int, str]:
        """Returns (exit code, message)."""
        ctx = multiprocessing.get_context("spawn")
        workers_n = self.config.workers_per_device
        config = self.config
        if config.device == "cpu" and workers_n > 1:
            # Workers sharing the CPU split its threads; more threads than cores only slows Paddle down.
            config = replace(config, ocr=replace(config.ocr, cpu_threads=max(1, config.ocr.cpu_threads // workers_n)))
        work_q = ctx.Queue(maxsize=max(8, workers_n * self.config.download_threads * 2))
        out_q = ctx.Queue()
        stop = ctx.Event()
        from inference_pod.shard.worker import worker_main

        procs = [
            ctx.Process(
                target=worker_main, name=f"ocrjob-worker-{i}", daemon=True,
                args=(i, config, self.manifest, self.models, work_q, out_q, stop),
            )
            for i in range(workers_n)
        ]
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeats, args=(done,), name="heartbeat", daemon=True)
        self._heartbeat("starting")
        for proc in procs:
            proc.start()
        beat.start()
        try:
            return self._supervise(procs, work_q, out_q, stop)
        finally:
            done.set()
            stop.set()
            _reap(procs, timeout=5)

    def _supervise(self, procs: list, work_q: Any, out_q: Any, stop: Any) -> tuple[int, str]:
        fed = 0
        sentinels_left = len(procs)  # one None per worker once every item is queued
        exited: set[int] = set()
        ready: set[int] = set()
        last_progress = time.monotonic()
        stop_deadline: float | None = None
        while True:
            if self.stop_requested.is_set() and stop_deadline is None:
                log.info("stop requested: finishing the current batch, grace %ss", self.config.grace_seconds)
                stop.set()
                stop_deadline = time.monotonic() + self.config.grace_seconds
            # Keep the shared work queue topped up (bounded: the workers pull as they have room).
            while stop_deadline is None and (fed < len(self.items) or sentinels_left):
                try:
                    work_q.put_nowait(self.items[fed] if fed < len(self.items) else None)
                except queue.Full:
                    break
                if fed < len(self.items):
                    fed += 1
                else:
                    sentinels_left -= 1
            try:
                message = out_q.get(timeout=POLL)
            except queue.Empty:
                message = None
            if isinstance(message, ItemDone):
                self.tally.add(message)
                last_progress = time.monotonic()
                if self.progress is not None:
                    self.progress.put(ShardProgress(self.shard, message))
            elif isinstance(message, Ready):
                ready.add(message.worker)
                self.devices[message.worker] = message.device
                self.models_used = message.models
                last_progress = time.monotonic()
                log.info("worker %s ready on %s", message.worker, message.device)
            elif isinstance(message, Fatal):
                return message.exit_code, message.message
            elif isinstance(message, Exited):
                exited.add(message.worker)
            if self.tally.done == self.tally.total and stop_deadline is None:
                return exit_codes.SUCCEEDED, f"processed {self.tally.total} items"
            if stop_deadline is not None:
                if len(exited) == len(procs) or time.monotonic() > stop_deadline:
                    return exit_codes.INTERRUPTED, (
                        f"interrupted: {self.tally.done} of {self.tally.total} items done; a rerun resumes the rest"
                    )
                continue
            for index, proc in enumerate(procs):
                if index not in exited and not proc.is_alive() and out_q.empty():
                    return exit_codes.SYSTEMIC, f"worker {index} died unexpectedly (exit code {proc.exitcode})"
            idle = time.monotonic() - last_progress
            if len(ready) < len(procs) and idle > self.config.startup_seconds:
                return exit_codes.SYSTEMIC, f"workers not ready after {self.config.startup_seconds}s (model load)"
            if ready and idle > self.config.stall_seconds:
                return exit_codes.SYSTEMIC, f"no item finished for {self.config.stall_seconds}s: stalled"

    def finish(self, exit_code: int, message: str) -> tuple[int, ShardSummary]:
        """Write the shard summary; returns the shard's final exit code with the summary as it ends.

        A summary that cannot be written (after the storage client's bounded retries) makes the shard fail with
        the storage error's code: the operator and the job summary read shard summaries from storage, so a
        success without one would be a success nobody can see. The results already written stay; the retry
        skips them."""
        summary = self._summary(exit_code, message)
        try:
            self.dest.put(layout.shard_summary_key(self.job_id, self.shard), records.encode(summary.to_dict()))
        except StorageError as exc:
            log.error("shard summary not written: %s", exc)
            lost = f"the shard summary could not be written: {exc}"
            if exit_code == exit_codes.SUCCEEDED:
                exit_code, message = exit_codes.for_storage_error(exc), f"{message}, but {lost}"
            else:  # keep the first failure's code: it is why the shard ended
                message = f"{message}; {lost}"
            summary = self._summary(exit_code, message)
        self._heartbeat(summary.status)
        results.write_termination_log(self.config.termination_log, summary)
        return exit_code, summary

    def _summary(self, exit_code: int, message: str) -> ShardSummary:
        status = {exit_codes.SUCCEEDED: "succeeded", exit_codes.INTERRUPTED: "interrupted"}.get(exit_code, "failed")
        return results.shard_summary(
            self.job_id, self.shard, status, exit_code, message, self.tally, self.started, time.time(), self._context()
        )


def _reap(procs: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def run_shard(
    config: LoaderConfig, progress: Any = None, install_signals: bool = True
) -> tuple[int, ShardSummary]:
    """Process one shard. Returns (exit code, summary). Never raises for expected failures."""
    try:
        plan_device(config.device, os.environ)  # fail fast, before any worker starts
        manifest = read_manifest(config.manifest, config)
        models = resolve_models(config.models, config.model_cache_dir, engine=config.ocr.engine)
    except ShardError as exc:
        return _failed_early(config, exc.exit_code, str(exc))
    except DeviceError as exc:
        return _failed_early(config, exc.exit_code, str(exc))
    except StorageError as exc:
        code = exit_codes.for_storage_error(exc)
        return _failed_early(config, code, str(exc))
    except (ValueError, OSError) as exc:  # incl. ModelDirError: a model location that is not a model
        return _failed_early(config, exit_codes.INPUT_ERROR, f"{type(exc).__name__}: {exc}")
    except ModelError as exc:  # e.g. the model download lock timed out: worth a retry
        return _failed_early(config, exit_codes.SYSTEMIC, str(exc))
    coordinator = Coordinator(config, manifest, models, progress)
    previous = {}
    if install_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: coordinator.stop_requested.set())
    try:
        code, message = coordinator.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("shard %s: %s (exit %s)", coordinator.shard, message, code)
    return coordinator.finish(code, message)


def _failed_early(config: LoaderConfig, code: int, message: str) -> tuple[int, ShardSummary]:
    log.error("%s", message)
    summary = results.early_failure_summary(code, message)
    results.write_termination_log(config.termination_log, summary)
    return code, summary
