"""Prometheus metrics. Gauges are derived from the last status of each job (so they survive a restart:
the first reconcile after it republishes them); counters and the histogram count what this process did.

    ocrjob_jobs{phase}                                   jobs by phase
    ocrjob_job_shards{namespace,job,state}               shards by state (pending, active, succeeded, failed)
    ocrjob_job_items{namespace,job,state}                items by state (total, done, ok, failed, skipped)
    ocrjob_items_processed_total / _failed_total         items finished by shard pods, as observed
    ocrjob_shard_pods_created_total{kind}                first attempts and retries
    ocrjob_shard_failures_total{category,reason}         classified pod failures
    ocrjob_planning_seconds                              planning time (listing + writing the plan)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ocrjob_operator.api.phases import Phase

_lock = threading.Lock()
_jobs: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name) -> last status
_items_seen: dict[tuple[str, str], tuple[int, int]] = {}  # (namespace, name) -> (ok+skipped, failed) counted

PLANNING_SECONDS = Histogram("ocrjob_planning_seconds", "Time to list the input and write the plan.",
                             buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800))
PODS_CREATED = Counter("ocrjob_shard_pods_created_total", "Shard pods created.", ["kind"])
SHARD_FAILURES = Counter("ocrjob_shard_failures_total", "Classified shard pod failures.", ["category", "reason"])
ITEMS_PROCESSED = Counter("ocrjob_items_processed_total", "Items finished by shard pods (ok or skipped).")
ITEMS_FAILED = Counter("ocrjob_items_failed_total", "Items recorded as errors by shard pods.")


class _JobCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        with _lock:
            jobs = dict(_jobs)
        phases = GaugeMetricFamily("ocrjob_jobs", "OcrJobs by phase.", labels=["phase"])
        counts = dict.fromkeys(Phase.values(), 0)
        for status in jobs.values():
            phase = str(status.get("phase") or Phase.PENDING.value)
            counts[phase] = counts.get(phase, 0) + 1
        for phase, n in counts.items():
            phases.add_metric([phase], n)
        yield phases
        shards = GaugeMetricFamily("ocrjob_job_shards", "Shards of each OcrJob by state.",
                                   labels=["namespace", "job", "state"])
        items = GaugeMetricFamily("ocrjob_job_items", "Items of each OcrJob by state.",
                                  labels=["namespace", "job", "state"])
        for (namespace, name), status in sorted(jobs.items()):
            for state, n in (status.get("shards") or {}).items():
                shards.add_metric([namespace, name, state], n)
            for state, n in (status.get("items") or {}).items():
                items.add_metric([namespace, name, state], n)
        yield shards
        yield items


def observe_job(namespace: str, name: str, status: dict[str, Any]) -> None:
    items = status.get("items") or {}
    done = int(items.get("ok", 0)) + int(items.get("skipped", 0))
    failed = int(items.get("failed", 0))
    with _lock:
        _jobs[namespace, name] = status
        seen = _items_seen.get((namespace, name))
        _items_seen[namespace, name] = (done, failed)
    if seen is not None:  # counters only grow by what this process saw change
        ITEMS_PROCESSED.inc(max(0, done - seen[0]))
        ITEMS_FAILED.inc(max(0, failed - seen[1]))


def forget_job(namespace: str, name: str) -> None:
    with _lock:
        _jobs.pop((namespace, name), None)
        _items_seen.pop((namespace, name), None)


_collector = _JobCollector()
_registered = False


def register(registry: CollectorRegistry = REGISTRY) -> None:
    global _registered
    if not _registered:
        registry.register(_collector)
        _registered = True


def serve(port: int, addr: str = "0.0.0.0") -> None:
    register()
    start_http_server(port, addr=addr)
