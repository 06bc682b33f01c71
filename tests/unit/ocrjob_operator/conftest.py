"""The `world` fixture: a Controller over fakes.py's Kubernetes and storage, made per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ocrjob_operator.controller import Controller
from tests.unit.ocrjob_operator.fakes import UID, Clock, FakeJobStorage, FakeKube, FakeStorageFactory


@pytest.fixture
def world(tmp_path: Path):
    storage = FakeJobStorage(tmp_path)
    for i in range(8):
        storage.source.put(f"doc-{i}.png", b"x" * (100 + i))
    storage.source.put("notes.txt", b"not a document")

    def make(**spec_extra: Any):
        spec = {"input": {"uri": "s3://bucket/in"}, "output": {"uri": "s3://bucket/out"}, "image": "img",
                "sharding": {"shardCount": 4}, "parallelism": 2, "device": "cpu",
                "retries": {"perShard": 1, "backoffSeconds": 10}, **spec_extra}
        job = {"apiVersion": "ocrjob.dev/v1alpha1", "kind": "OcrJob",
               "metadata": {"name": "job", "namespace": "ns", "uid": UID, "generation": 1}, "spec": spec}
        kube = FakeKube(job)
        events: list[tuple[str, str, str]] = []
        clock = Clock()

        def controller() -> Controller:  # a fresh one = an operator restart (no memory)
            return Controller(kube, FakeStorageFactory(storage), lambda _j, t, r, m: events.append((t, r, m)),
                              clock=clock, monotonic=clock)

        return kube, storage, events, clock, controller

    return make
