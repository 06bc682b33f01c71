"""One worker process: fetch threads → ONE inference thread (owns the predictor) → upload threads.

Every queue is bounded and every wait has a timeout, so a stop request or a failure anywhere is noticed
within a fraction of a second. Only the inference thread constructs and calls the predictor; fetch and
upload threads never touch Paddle. Error records (a bad file) go from the fetch threads straight to the
uploads; OCR results come from the inference thread, which sends the uploads their end-of-work marker
only after the last fetch thread has ended and its own last result is queued, so nothing is lost.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from inference_pod.job import exit_codes, layout, records
from inference_pod.job.plan_records import Item, Manifest
from inference_pod.job.result_record import Page, ResultContext, ResultRecord
from inference_pod.job.storage import ObjectNotFound, ObjectTooLarge, StorageError, open_storage
from inference_pod.models import ModelSpec
from inference_pod.shard import results
from inference_pod.shard.blank import is_blank
from inference_pod.shard.config import LoaderConfig
from inference_pod.shard.decode import CORRUPT, NOT_FOUND, TOO_LARGE, ItemError, check_size, open_document
from inference_pod.shard.device import DeviceError, DevicePlan, pin_device, verify_device
from inference_pod.shard.messages import Exited, Fatal, ItemDone, Outcome, Ready, WorkerMessage

log = logging.getLogger("ocrjob.pipeline")
POLL = 0.2  # seconds: the longest any thread blocks before re-checking stop/abort
_END = object()


@dataclass
class ItemState:
    """An item between decode and upload. Its fetch thread sets `error` (then no more pages come); the
    inference thread fills `pages` and finishes it when all are there."""

    item: Item
    kind: str
    page_count: int
    timing: dict[str, float]
    pages: dict[int, Page] = field(default_factory=dict)
    error: ItemError | None = None
    finished: bool = False


class Pipeline:
    def __init__(
        self, worker: int, config: LoaderConfig, manifest: Manifest, models: ModelSpec, device: DevicePlan,
        work_q: Any, out_q: Any, stop: Any,
    ) -> None:
        self.worker, self.config, self.manifest, self.models, self.device = worker, config, manifest, models, device
        self.work_q, self.out_q, self.stop = work_q, out_q, stop
        self.source = open_storage(manifest.input, config.s3)
        self.dest = open_storage(manifest.output, config.s3)
        self.items_q: queue.Queue = queue.Queue(maxsize=config.download_threads * 2)
        self.pages_q: queue.Queue = queue.Queue(maxsize=config.prefetch_pages)
        self.upload_q: queue.Queue = queue.Queue(maxsize=config.upload_threads * 4)
        self.abort = threading.Event()
        self.context = ResultContext(manifest.job_id, manifest.shard_index)  # completed once the predictor loads
        self._fetchers_left = config.download_threads
        self._fetchers_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------
    def _halted(self) -> bool:
        return self.abort.is_set() or self.stop.is_set()

    def _put(self, q: queue.Queue, value: Any, *, until_abort_only: bool = False) -> bool:
        """Put with a timeout loop; False if the pipeline is halted first."""
        while not (self.abort.is_set() if until_abort_only else self._halted()):
            try:
                q.put(value, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _emit(self, message: WorkerMessage) -> None:
        self.out_q.put(message)

    def _fatal(self, code: int, message: str) -> None:
        if not self.abort.is_set():
            self.abort.set()
            self._emit(Fatal(self.worker, code, message))

    def _guard(self, target):
        def run() -> None:
            try:
                target()
            except StorageError as exc:
                code = exit_codes.for_storage_error(exc)
                self._fatal(code, str(exc))
            except Exception as exc:
                log.error("%s failed:\n%s", threading.current_thread().name, traceback.format_exc())
                self._fatal(exit_codes.SYSTEMIC, f"{threading.current_thread().name}: {type(exc).__name__}: {exc}")
        return run

    # -- threads --------------------------------------------------------------------------------
    def _feed(self) -> None:
        """Move items from the coordinator's queue into this worker's fetch queue; None means no more."""
        while not self._halted():
            try:
                entry = self.work_q.get(timeout=POLL)
            except queue.Empty:
                continue
            if entry is None:
                break
            if not self._put(self.items_q, entry):
                return
        for _ in range(self.config.download_threads):
            self._put(self.items_q, None)

    def _fetch(self) -> None:
        try:
            while not self._halted():
                try:
                    item = self.items_q.get(timeout=POLL)
                except queue.Empty:
                    continue
                if item is None:
                    break
                self._fetch_one(item)
        finally:
            with self._fetchers_lock:
                self._fetchers_left -= 1
                last = self._fetchers_left == 0
            if last:
                self._put(self.pages_q, _END)

    def _previous_result(self, item: Item) -> ResultRecord | None:
        """The result an earlier attempt wrote, if any (read, not just checked: its errors must be kept). An
        object that is not a result of ours is treated as absent: the item is processed again and overwrites it."""
        return records.read(self.dest, layout.result_key(item.key), ResultRecord)

    def _fetch_one(self, item: Item) -> None:
        log.debug("%s: fetching", item.key)
        previous = self._previous_result(item)
        if previous is not None:
            error = previous.error
            self._emit(ItemDone(self.worker, item.key, Outcome.SKIPPED, code=error.code if error else None,
                                message=error.message if error else None, previous_failed=previous.failed,
                                no_text_pages=previous.no_text_pages))
            return
        started = time.perf_counter()
        state = ItemState(item, "", 0, {})
        try:
            check_size(item.size, self.config.limits)
            try:  # bounded: the object may have been replaced by a larger one since it was planned
                data = self.source.get(item.key, self.config.limits.max_item_bytes)
            except ObjectNotFound as exc:
                raise ItemError(NOT_FOUND, f"the object disappeared after planning: {exc}") from exc
            except ObjectTooLarge as exc:
                raise ItemError(TOO_LARGE, f"the object grew after planning: {exc} (maxItemBytes)") from exc
            state.timing["download_s"] = time.perf_counter() - started
            decode_started = time.perf_counter()
            document = open_document(data, self.config.limits)
            del data
            state.kind, state.page_count = document.kind, document.page_count
            decode_s = time.perf_counter() - decode_started
            pages = iter(document.pages)
            for number in range(document.page_count):
                page_started = time.perf_counter()
                page = next(pages, None)  # decoding happens here, lazily: time it, not the queue wait
                if page is None:
                    raise ItemError(CORRUPT, f"the document ended after {number} of {document.page_count} pages")
                decode_s += time.perf_counter() - page_started
                state.timing["decode_s"] = decode_s
                if not self._put(self.pages_q, (state, number, page)):
                    return  # stopping: the item stays without a result and a rerun resumes it
        except ItemError as exc:
            # Straight to the uploads: an error record needs no predictor and must not queue behind pages.
            # (The inference thread ends the uploads only after the last fetcher has ended, so it is kept.)
            log.debug("%s: %s", item.key, exc.code)
            state.error, state.finished = exc, True
            record = results.error_record(item, self.manifest.input, exc.code, exc.message, self.context)
            done = ItemDone(self.worker, item.key, Outcome.FAILED, code=exc.code, message=exc.message)
            self._put(self.upload_q, (item, record, done))

    def _infer(self) -> None:
        from inference_pod.shard.engine import OcrEngine  # imported here: Paddle loads only after the device is pinned

        try:
            # Verify first: PaddleOCR itself would quietly "switch to CPU" when the GPU is missing.
            report = verify_device(self.device, self.config.ocr.engine)
            engine = OcrEngine(self.models, self.config.ocr, self.device.paddle_device)
        except DeviceError as exc:  # its type says whether a retry can help: NoCudaBuild never
            self._fatal(exc.exit_code, str(exc))
            return
        except Exception as exc:
            self._fatal(exit_codes.SYSTEMIC, f"model load failed: {type(exc).__name__}: {exc}")
            return
        self.context = replace(self.context, models=engine.model_names, device=report.as_dict(), worker=self.worker)
        self._emit(Ready(self.worker, report.as_dict(), engine.model_names))
        batch: list[tuple[ItemState, int, Any]] = []
        ended = False
        while not ended and not self._halted():
            try:
                entry = self.pages_q.get(timeout=0.01 if batch else POLL)
            except queue.Empty:
                entry = None
            if entry is _END:
                ended = True
            elif entry is not None and entry[0].error is None:  # pages of a document that failed later: dropped
                batch.append(entry)
            if batch and (len(batch) >= self.config.page_batch_size or entry is None or ended):
                self._predict(engine, batch)
                batch = []
        for _ in range(self.config.upload_threads):
            self._put(self.upload_q, _END, until_abort_only=True)

    def _predict(self, engine: Any, batch: list[tuple[ItemState, int, Any]]) -> None:
        started = time.perf_counter()
        predictions = engine.predict([page for _, _, page in batch])
        share = (time.perf_counter() - started) / len(batch)
        for (state, number, page), prediction in zip(batch, predictions, strict=True):
            # The decoded page is still here: measured only if no text was found (no second decode).
            state.pages[number] = results.page_record(number + 1, prediction, partial(is_blank, page))
            state.timing["inference_s"] = state.timing.get("inference_s", 0.0) + share
            if len(state.pages) == state.page_count and state.error is None:
                self._finish(state)

    def _finish(self, state: ItemState) -> None:
        if state.finished:
            return
        state.finished = True
        pages = [state.pages[n] for n in range(state.page_count)]
        record = results.ok_record(state.item, self.manifest.input, pages, self.context, state.timing, state.kind)
        done = ItemDone(self.worker, state.item.key, Outcome.OK, pages=state.page_count,
                        no_text_pages=record.no_text_pages)
        self._put(self.upload_q, (state.item, record, done), until_abort_only=True)

    def _upload(self) -> None:
        while not self.abort.is_set():
            try:
                entry = self.upload_q.get(timeout=POLL)
            except queue.Empty:
                continue
            if entry is _END:
                return
            item, record, done = entry
            self.dest.put(layout.result_key(item.key), records.encode(record.to_dict()))
            log.debug("%s: result written (%s)", item.key, done.outcome.value)
            self._emit(done)

    def run(self) -> None:
        threads = [threading.Thread(target=self._guard(self._infer), name="inference", daemon=True)]
        threads += [threading.Thread(target=self._guard(self._feed), name="feed", daemon=True)]
        threads += [
            threading.Thread(target=self._guard(self._fetch), name=f"fetch-{i}", daemon=True)
            for i in range(self.config.download_threads)
        ]
        threads += [
            threading.Thread(target=self._guard(self._upload), name=f"upload-{i}", daemon=True)
            for i in range(self.config.upload_threads)
        ]
        for thread in threads:
            thread.start()
        # The inference thread ending (all done, or stopping) ends the work; the uploads then drain.
        # Feed and fetch threads are daemons that notice the stop by themselves.
        for thread in [t for t in threads if t.name.startswith(("inference", "upload"))]:
            while thread.is_alive() and not self.abort.is_set():
                thread.join(timeout=POLL)


def worker_main(
    worker: int, config: LoaderConfig, manifest: Manifest, models: ModelSpec, work_q: Any, out_q: Any, stop: Any,
) -> None:
    """Entry point of a spawned worker process. Pins the device before anything imports Paddle."""
    level = os.environ.get("OCRJOB_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format=f"%(asctime)s worker-{worker} %(levelname)s %(name)s %(message)s")
    # Ctrl-C reaches the whole process group: the coordinator decides how to stop, not the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        device = pin_device(config.device)
    except DeviceError as exc:
        out_q.put(Fatal(worker, exc.exit_code, str(exc)))
        return
    try:
        Pipeline(worker, config, manifest, models, device, work_q, out_q, stop).run()
    finally:
        out_q.put(Exited(worker))
