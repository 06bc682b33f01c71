"""In-memory stand-ins for the operator's unit tests: a Kubernetes API (`FakeKube`), job storage on local disk
(`FakeJobStorage`), a settable clock, and shard pods as the apiserver returns them (`pod`, `terminated`). The
`world` fixture (conftest.py) wires them to a Controller."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from inference_pod.job import layout
from inference_pod.job.plan_records import Item
from inference_pod.job.records import encode
from inference_pod.job.result_record import ResultContext
from inference_pod.job.storage import LocalStorage, ObjectNotFound
from inference_pod.shard.results import ok_record
from ocrjob_operator.api.names import ANNOTATION_KILL_REASON, LABEL_JOB_UID, pod_name
from ocrjob_operator.classify import parse_time

UID = "11111111-2222-3333-4444-555555555555"
T0 = 1_800_000_000.0


def iso(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class FakeKube:
    def __init__(self, job: dict[str, Any]) -> None:
        self.job: dict[str, Any] | None = job
        self.pods: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.killed: list[tuple[str, int]] = []
        self.status_writes = 0
        self.secrets: dict[str, dict[str, str]] = {}

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.job)

    def patch_job_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        assert self.job is not None
        status = self.job.setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        self.status_writes += 1

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        self.job = None

    def list_job_pods(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(p) for p in self.pods.values() if p["metadata"]["labels"][LABEL_JOB_UID] == uid]

    def create_pod(self, pod: dict[str, Any]) -> bool:
        name = pod["metadata"]["name"]
        if name in self.pods:
            return False
        pod = copy.deepcopy(pod)
        pod["metadata"]["creationTimestamp"] = iso(T0)
        pod["status"] = {"phase": "Pending"}
        self.pods[name] = pod
        self.created.append(name)
        return True

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> bool:
        self.deleted.append(name)
        return self.pods.pop(name, None) is not None

    def kill_pod(self, namespace: str, name: str, reason: str, message: str, deadline_seconds: int) -> None:
        self.killed.append((name, deadline_seconds))
        self.pods[name]["metadata"].setdefault("annotations", {})[ANNOTATION_KILL_REASON] = reason

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get(name)

    # -- simulating the kubelet --------------------------------------------------------------------------
    def run(self, name: str) -> None:
        self.pods[name]["status"] = {"phase": "Running", "containerStatuses": [
            {"name": "ocr", "state": {"running": {"startedAt": iso(T0)}}}]}

    def finish(self, name: str, code: int, items: dict[str, int] | None = None, reason: str = "Error",
               pod_reason: str | None = None, at: float = T0) -> None:
        message = json.dumps({"status": "succeeded" if code == 0 else "failed", "exit_code": code, "items": items,
                              "message": f"exit {code}"})
        status = {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [{"name": "ocr", "state": {
            "terminated": {"exitCode": code, "reason": "Completed" if code == 0 else reason, "message": message,
                           "startedAt": iso(T0), "finishedAt": iso(at)}}}]}
        if pod_reason:
            status["reason"] = pod_reason
        self.pods[name]["status"] = status


class FakeJobStorage:
    def __init__(self, root: Path) -> None:
        self.source = LocalStorage(root / "in")
        self.dest = LocalStorage(root / "out")
        self.root = root

    def read_object(self, uri: str, max_bytes: int) -> bytes:
        return LocalStorage(self.root / "objects").get(uri.rsplit("/", 1)[-1], max_bytes)

    def uri(self, key: str) -> str:
        return f"s3://bucket/out/{key}"

    def _json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.dest.get(key))
        except ObjectNotFound:
            return None

    def heartbeat(self, job_id: str, shard: int) -> dict[str, Any] | None:
        return self._json(layout.progress_key(job_id, shard))

    def shard_summary(self, job_id: str, shard: int) -> dict[str, Any] | None:
        return self._json(layout.shard_summary_key(job_id, shard))


class FakeStorageFactory:
    def __init__(self, storage: FakeJobStorage) -> None:
        self.storage = storage

    def for_job(self, namespace: str, spec: Any) -> FakeJobStorage:
        return self.storage


def reasons(events: list[tuple[str, str, str]]) -> list[str]:
    return [r for _, r, _ in events]


def write_summary(storage: FakeJobStorage, shard: int, items: int) -> None:
    """What a shard that succeeded leaves in storage: a result per document of its manifest, then its summary."""
    plan = json.loads(storage.dest.get(layout.plan_key(UID)))
    manifest = json.loads(storage.dest.get(next(s["manifest"] for s in plan["shards"] if s["index"] == shard)))
    context = ResultContext(UID, shard)
    for doc in manifest["items"][:items]:
        record = ok_record(Item(doc["key"], doc["size"]), "s3://bucket/in", [], context, {}, "png")
        storage.dest.put(layout.result_key(doc["key"]), encode(record.to_dict()))
    storage.dest.put(layout.shard_summary_key(UID, shard), json.dumps({
        "status": "succeeded", "items": {"ok": items, "failed": 0, "skipped": 0, "total": items, "pages": items},
        "devices": [{"kind": "cpu"}], "seconds": 1.0}).encode())


POD_T0 = "2026-01-01T00:00:00Z"  # a pod's creation and start time
POD_NOW = parse_time(POD_T0) + 100  # type: ignore[operator]


def pod(phase: str = "Running", *, state: dict[str, Any] | None = None, reason: str | None = None,
        conditions: list[dict[str, Any]] | None = None, annotations: dict[str, str] | None = None,
        deleting: bool = False, start: str = POD_T0) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": pod_name("job", 2, 1),
                            "labels": {"ocrjob.dev/shard": "2", "ocrjob.dev/attempt": "1"},
                            "creationTimestamp": POD_T0, "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    status: dict[str, Any] = {"phase": phase, "startTime": start, "conditions": conditions or []}
    if reason:
        status["reason"] = reason
        status["message"] = f"{reason} happened"
    if state is not None:
        status["containerStatuses"] = [{"name": "ocr", "state": state}]
    return {"metadata": meta, "spec": {"nodeName": "node-1"}, "status": status}


def terminated(code: int, reason: str = "Error", message: str | None = None) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason, "startedAt": POD_T0,
                           "finishedAt": "2026-01-01T00:00:50Z",
                           **({"message": message} if message is not None else {})}}
