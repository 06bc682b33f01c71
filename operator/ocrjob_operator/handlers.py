"""Thin kopf handlers: settings, one daemon per OcrJob running the reconcile loop, pod events that wake it.

The daemon calls `Controller.reconcile` in a worker thread (it blocks on the Kubernetes and S3 clients),
then sleeps until the delay it returned, a wake-up from a pod or OcrJob event, or its stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
from typing import Any

import kopf

from ocrjob_operator.api.names import (
    FINALIZER,
    GROUP,
    KOPF_PREFIX,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from ocrjob_operator.controller import Controller
from ocrjob_operator.kube import Kube
from ocrjob_operator.storage import StorageFactory

ERROR_BACKOFF = (2.0, 5.0, 10.0, 30.0, 60.0)  # after unexpected errors in a step (API outage, bugs)
MIN_SLEEP = 0.5  # debounce: our own pod creations wake us too

RECONCILE_THREADS = 32  # jobs reconciled at once; a long planning blocks only its own job's loop
_executor = concurrent.futures.ThreadPoolExecutor(max_workers=RECONCILE_THREADS, thread_name_prefix="reconcile")
_wakeups: dict[tuple[str, str], asyncio.Event] = {}
_controller: Controller | None = None
_controller_lock = threading.Lock()


def apply_settings(settings: kopf.OperatorSettings) -> None:
    """kopf settings, chosen once: our own prefix and finalizer, watch timeouts, server-side pod filtering."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration")
    settings.watching.server_timeout = 300  # the apiserver ends each watch after this; kopf re-watches
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 600
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.posting.reporting_component = MANAGED_BY
    settings.posting.level = logging.INFO
    settings.scanning.disabled = True  # no runtime CRD/namespace discovery: no RBAC for it needed
    settings.execution.max_workers = 8  # kopf's own sync work; the reconcile loops have their own pool
    # Only our pods are watched (server-side label selector), not every pod in the cluster.
    settings.watching.label_selectors["v1", "pods"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


log = logging.getLogger("ocrjob.operator")


def emit_event(job: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the OcrJob (posted by kopf), and the same line in the operator's log."""
    meta = job.get("metadata") or {}
    log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s/%s %s: %s", meta.get("namespace"),
            meta.get("name"), reason, message)
    kopf.event(job, type=type_, reason=reason, message=message[:1000])


def controller() -> Controller:
    global _controller
    with _controller_lock:
        if _controller is None:
            kube = Kube()
            _controller = Controller(kube, StorageFactory(kube), emit_event)
        return _controller


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    apply_settings(settings)
    controller()  # fail at start-up, not on the first job, when the cluster config is wrong


async def _sleep(delay: float, wake: asyncio.Event, stopped: kopf.DaemonStopped) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(delay, MIN_SLEEP)
    await asyncio.sleep(MIN_SLEEP)
    while not stopped and not wake.is_set():
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=min(remaining, 1.0))
    wake.clear()


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=120, initial_delay=0)
async def reconcile_job(name: str, namespace: str, uid: str, stopped: kopf.DaemonStopped, logger: logging.Logger,
                        **_: Any) -> None:
    key = (namespace, name)
    wake = _wakeups.setdefault(key, asyncio.Event())
    ctl = controller()
    errors = 0
    try:
        while not stopped:
            try:
                # Blocking clients: in a worker thread, with kopf's context (its event poster) copied along.
                context = contextvars.copy_context()
                delay = await asyncio.get_running_loop().run_in_executor(
                    _executor, context.run, ctl.reconcile, namespace, name)
                errors = 0
            except Exception:
                delay = ERROR_BACKOFF[min(errors, len(ERROR_BACKOFF) - 1)]
                errors += 1
                logger.exception("reconcile failed (attempt %s); retrying in %ss", errors, delay)
            if delay is None:
                return
            await _sleep(delay, wake, stopped)
    finally:
        if _wakeups.get(key) is wake:
            del _wakeups[key]
        ctl.forget(uid, namespace, name)


def _wake(namespace: str | None, name: str | None) -> None:
    event = _wakeups.get((namespace or "", name or ""))
    if event is not None:
        event.set()


@kopf.on.event("v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: kopf.PRESENT})
async def pod_changed(meta: kopf.Meta, namespace: str | None, **_: Any) -> None:
    _wake(namespace, meta.get("labels", {}).get(LABEL_JOB))


_generations: dict[tuple[str, str], int] = {}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def job_changed(name: str | None, namespace: str | None, meta: kopf.Meta, type: str | None,
                      **_: Any) -> None:
    """Spec edits (suspend, parallelism) take effect at once; our own status writes do not wake the loop."""
    key = (namespace or "", name or "")
    if type == "DELETED":
        _generations.pop(key, None)
        return
    generation = int(meta.get("generation") or 0)
    if _generations.get(key) != generation:
        _generations[key] = generation
        _wake(namespace, name)
