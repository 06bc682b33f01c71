"""What a process node knows about one pod, and the pod status a kubelet would report from it."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def now() -> str:
    """RFC 3339 seconds, the API's `Time` format."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """The API's `MicroTime` format (Lease renewTime)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ContainerRun:
    name: str
    spec: dict[str, Any]
    log: Path
    termination_log: Path
    proc: subprocess.Popen[bytes] | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")  # (reason, message)
    retry_at: float = 0.0  # monotonic time of the next start attempt while waiting
    started_at: str | None = None
    terminated: dict[str, Any] | None = None  # the API's ContainerStateTerminated, camelCase
    last_terminated: dict[str, Any] | None = None
    restart_count: int = 0
    kill_reason: str | None = None  # e.g. OOMKilled when a test simulates it


@dataclass
class PodRun:
    pod: dict[str, Any]  # the latest pod object seen (raw dict)
    dir: Path
    containers: dict[str, ContainerRun]
    gpus: list[int]
    started: float = field(default_factory=time.monotonic)
    start_time: str = field(default_factory=now)
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    extra_conditions: list[dict[str, Any]] = field(default_factory=list)  # e.g. DisruptionTarget
    kill_at: float | None = None  # SIGKILL deadline once SIGTERM was sent
    terminating: bool = False
    done: bool = False  # every container terminated for good; phase is final
    deleted: bool = False  # we confirmed the deletion (or the object is gone)
    reported: dict[str, Any] | None = None  # the status last written, to skip no-op patches
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # condition -> (status, since)

    @property
    def key(self) -> tuple[str, str]:
        return self.pod["metadata"]["namespace"], self.pod["metadata"]["name"]

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])


def _transition(run: PodRun, kind: str, status: str) -> str:
    """lastTransitionTime: kept while a condition's status stays the same."""
    previous = run.transitions.get(kind)
    if previous is None or previous[0] != status:
        run.transitions[kind] = (status, now())
    return run.transitions[kind][1]


def _container_status(c: ContainerRun) -> dict[str, Any]:
    # Every state key is sent (None deletes), so a strategic merge never leaves running+terminated.
    state: dict[str, Any] = {"waiting": None, "running": None, "terminated": None}
    if c.terminated:
        state["terminated"] = c.terminated
    elif c.proc:
        state["running"] = {"startedAt": c.started_at}
    else:
        reason, message = c.waiting or ("ContainerCreating", "")
        state["waiting"] = {"reason": reason, **({"message": message} if message else {})}
    status = {"name": c.name, "image": c.spec.get("image", ""), "imageID": "", "ready": bool(c.proc),
              "started": bool(c.proc), "restartCount": c.restart_count, "state": state,
              "lastState": {"terminated": c.last_terminated} if c.last_terminated else {}}
    if c.proc:
        status["containerID"] = f"process://{c.proc.pid}"
    return status


def pod_status(run: PodRun) -> dict[str, Any]:
    """The pod's `status` as the kubelet writes it (phase, conditions, IPs, containerStatuses)."""
    ready = run.phase == "Running" and all(c.proc for c in run.containers.values())
    not_ready = "PodCompleted" if run.done else "ContainersNotReady"
    conditions = []
    for kind, ok, reason in (("PodReadyToStartContainers", not run.done, None), ("Initialized", True, None),
                             ("ContainersReady", ready, None if ready else not_ready),
                             ("Ready", ready, None if ready else not_ready)):
        status = "True" if ok else "False"
        cond = {"type": kind, "status": status, "lastProbeTime": None,
                "lastTransitionTime": _transition(run, kind, status)}
        if reason:
            cond["reason"] = reason
        conditions.append(cond)
    conditions += [{**c, "lastTransitionTime": _transition(run, c["type"], c["status"])}
                   for c in run.extra_conditions]
    return {"phase": run.phase, "conditions": conditions, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": run.start_time,
            "containerStatuses": [_container_status(c) for c in run.containers.values()],
            "reason": run.reason, "message": run.message}
