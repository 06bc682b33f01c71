"""What happened to a shard pod, from its observed status alone (pure; the raw API dict in, an outcome out).

    DISRUPTED    eviction, preemption, node loss/shutdown, DisruptionTarget, SIGTERM (exit 75): retry, free
    INFRASTRUCTURE storage unavailable (exit 74: unreachable, 5xx, throttling): retry with capped exponential
                 backoff, free, bounded in time by spec.retries.infrastructureTimeoutSeconds
    RETRYABLE    crash, OOMKilled, SIGKILL, systemic failure (exit 70), device unavailable (69: zero or several
                 GPUs, another node may do), stall, deadline: retry, counted against spec.retries.perShard
    INPUT_ERROR  invalid shard manifest or usage (exit 65/64): the shard fails, no retry
    CONFIG_ERROR image pull, container config (missing Secret/key), start error, refused credentials (77), an image
                 without CUDA for device gpu (78): every shard would fail the same way, so the job fails fast with
                 the reason
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from inference_pod.job import exit_codes
from ocrjob_operator.api.names import (
    ANNOTATION_KILL_MESSAGE,
    ANNOTATION_KILL_REASON,
    COMPLETION_INDEX_LABEL,
    INDEX_FAILURE_COUNT_ANNOTATION,
    INDEX_IGNORED_FAILURE_COUNT_ANNOTATION,
    LABEL_ATTEMPT,
    LABEL_SHARD,
)

# Waiting reasons that mean the pod cannot start as configured. A short grace absorbs registry blips and
# a Secret created a moment after the OcrJob.
CONFIG_WAITING_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
    "CreateContainerError", "RunContainerError",
})
IMMEDIATE_CONFIG_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull"})
CONFIG_ERROR_GRACE_SECONDS = 30.0
# Pod-level reasons set by the kubelet/controllers when the node, not the shard, was the problem.
DISRUPTION_POD_REASONS = frozenset({
    "Evicted", "Preempting", "NodeLost", "NodeShutdown", "Shutdown", "Terminated", "UnexpectedAdmissionError",
    "OutOfcpu", "OutOfmemory", "OutOfpods", "OutOfephemeral-storage", "NodeAffinity", "NodeAffinityMismatch",
})
KILL_STALLED = "Stalled"
UNSCHEDULABLE = "Unschedulable"  # the scheduler's PodScheduled=False reason: no node fits the pod
SIGKILL_EXIT = 128 + 9  # a runtime reports a process killed by signal N as exit 128+N


class Category(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    TERMINATING = "Terminating"
    SUCCEEDED = "Succeeded"
    DISRUPTED = "Disrupted"
    INFRASTRUCTURE = "Infrastructure"
    RETRYABLE = "Retryable"
    INPUT_ERROR = "InputError"
    CONFIG_ERROR = "ConfigError"


ACTIVE = frozenset({Category.PENDING, Category.RUNNING, Category.TERMINATING})
# The loader's exit codes whose category is the code's alone (classify_pod says the same, with reasons): what an
# Indexed Job's podFailurePolicy tells the Job controller (jobspec.py). Every other non-zero exit is RETRYABLE.
EXIT_CATEGORIES: dict[int, Category] = {
    exit_codes.USAGE: Category.INPUT_ERROR,
    exit_codes.INPUT_ERROR: Category.INPUT_ERROR,
    exit_codes.CREDENTIALS: Category.CONFIG_ERROR,
    exit_codes.DEVICE_UNSUPPORTED: Category.CONFIG_ERROR,
    exit_codes.INTERRUPTED: Category.DISRUPTED,
    exit_codes.STORAGE_UNAVAILABLE: Category.INFRASTRUCTURE,
}


@dataclass(frozen=True)
class PodOutcome:
    name: str
    shard: int
    attempt: int
    category: Category
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    created_at: float = 0.0
    started_at: float | None = None  # container start (Running)
    finished_at: float | None = None
    node: str | None = None
    summary: dict[str, Any] | None = None  # the loader's termination message, when it is JSON
    deleting: bool = False
    unschedulable_since: float | None = None  # PodScheduled=False (reason Unschedulable) since then

    @property
    def active(self) -> bool:
        return self.category in ACTIVE

    @property
    def counted(self) -> bool:
        """Spends the shard's retry budget."""
        return self.category is Category.RETRYABLE


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def _summary(message: str | None) -> dict[str, Any] | None:
    if not message:
        return None
    try:
        doc = json.loads(message)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _short(text: str | None, limit: int = 400) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _with_fix(summary_msg: str, fix: str) -> str:
    return (summary_msg + "; " if summary_msg else "") + fix


def _exit_outcome(code: int, reason: str, summary_msg: str) -> tuple[Category, str, str]:
    if reason == "OOMKilled":
        return Category.RETRYABLE, "OOMKilled", (
            "the container ran out of memory (OOMKilled); raise spec.resources.limits.memory or lower "
            "spec.workersPerPod / spec.ocr.pageBatchSize")
    if reason in ("StartError", "ContainerCannotRun"):
        return Category.CONFIG_ERROR, "StartError", summary_msg or "the container could not start; check spec.image"
    if code in (exit_codes.INPUT_ERROR, exit_codes.USAGE):
        return Category.INPUT_ERROR, "InvalidInput" if code == exit_codes.INPUT_ERROR else "UsageError", (
            summary_msg or exit_codes.DESCRIPTIONS[code])
    if code == exit_codes.CREDENTIALS:
        return Category.CONFIG_ERROR, "CredentialsRefused", _with_fix(
            summary_msg, "fix the Secret named in spec.s3.credentialsSecret")
    if code == exit_codes.DEVICE_UNSUPPORTED:  # the image, not the node: every shard and every retry would fail
        return Category.CONFIG_ERROR, "DeviceUnsupported", _with_fix(
            summary_msg or exit_codes.DESCRIPTIONS[code],
            "set spec.image to a GPU image (the `ocrjob[gpu]` extra) or spec.device to cpu")
    if code == exit_codes.INTERRUPTED:
        return Category.DISRUPTED, "Interrupted", summary_msg or "stopped by SIGTERM; the shard resumes"
    if code == exit_codes.STORAGE_UNAVAILABLE:
        return Category.INFRASTRUCTURE, "StorageUnavailable", summary_msg or exit_codes.DESCRIPTIONS[code]
    if code == SIGKILL_EXIT:  # not OOMKilled (above): someone or something SIGKILLed it; its log tail is unrelated
        return Category.RETRYABLE, "Killed", (
            "the container was killed (SIGKILL, exit 137) without finishing: not out of memory; something outside "
            "the loader killed it (a person, a node agent, the runtime)")
    if code == exit_codes.DEVICE_UNAVAILABLE:
        return Category.RETRYABLE, "DeviceUnavailable", summary_msg or exit_codes.DESCRIPTIONS[code]
    if code == exit_codes.SYSTEMIC:
        return Category.RETRYABLE, "SystemicFailure", summary_msg or exit_codes.DESCRIPTIONS[code]
    return Category.RETRYABLE, f"ExitCode{code}", summary_msg or f"the container exited with code {code} ({reason})"


def _shard(labels: dict[str, str]) -> int:
    """The pod's shard: the operator's label, or the index the Job controller gave it; -1 when neither."""
    value = labels.get(LABEL_SHARD) or labels.get(COMPLETION_INDEX_LABEL) or ""
    return int(value) if value.isdigit() else -1


def _attempt(labels: dict[str, str], annotations: dict[str, str]) -> int:
    """The pod's attempt: the operator's label, or how many earlier pods of its index failed (counted or not)."""
    value = labels.get(LABEL_ATTEMPT)
    if value is not None:
        return int(value) if value.isdigit() else -1
    counts = [annotations.get(a, "0") for a in (INDEX_FAILURE_COUNT_ANNOTATION, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION)]
    return sum(int(c) for c in counts) if all(c.isdigit() for c in counts) and _shard(labels) >= 0 else -1


def classify_pod(pod: dict[str, Any], now: float) -> PodOutcome:
    """Classify one shard pod (the raw API object, camelCase)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    phase = status.get("phase") or "Pending"
    container = _container(pod)
    state = container.get("state") or {}
    terminated = state.get("terminated") or {}
    message = terminated.get("message")
    summary = _summary(message)
    summary_msg = _short((summary or {}).get("message") or (message if summary is None else ""))
    base = dict(
        name=meta.get("name", ""), shard=_shard(labels), attempt=_attempt(labels, annotations),
        created_at=parse_time(meta.get("creationTimestamp")) or 0.0,
        started_at=parse_time((state.get("running") or {}).get("startedAt") or terminated.get("startedAt")),
        finished_at=parse_time(terminated.get("finishedAt")), node=(pod.get("spec") or {}).get("nodeName"),
        summary=summary, deleting=bool(meta.get("deletionTimestamp")),
        exit_code=terminated.get("exitCode"),
    )

    def out(category: Category, reason: str, text: str) -> PodOutcome:
        return PodOutcome(category=category, reason=reason, message=_short(text), **base)  # type: ignore[arg-type]

    if phase == "Succeeded":
        return out(Category.SUCCEEDED, "Completed", summary_msg)
    if phase == "Failed":
        if annotations.get(ANNOTATION_KILL_REASON):
            return out(Category.RETRYABLE, annotations[ANNOTATION_KILL_REASON],
                       annotations.get(ANNOTATION_KILL_MESSAGE, "killed by the operator"))
        pod_reason = status.get("reason") or ""
        if pod_reason in DISRUPTION_POD_REASONS:  # e.g. Evicted: the most telling name for users
            return out(Category.DISRUPTED, pod_reason, status.get("message") or pod_reason)
        disruption = next((c for c in status.get("conditions") or []
                           if c.get("type") == "DisruptionTarget" and c.get("status") == "True"), None)
        if disruption is not None:
            return out(Category.DISRUPTED, disruption.get("reason") or "DisruptionTarget",
                       disruption.get("message") or status.get("message") or "the pod was disrupted")
        if pod_reason == "DeadlineExceeded":
            return out(Category.RETRYABLE, "DeadlineExceeded",
                       "the shard ran longer than spec.shardDeadlineSeconds; raise it or use more shards")
        if terminated:
            category, reason, text = _exit_outcome(int(terminated.get("exitCode") or 0),
                                                   terminated.get("reason") or "", summary_msg)
            return out(category, reason, text)
        return out(Category.RETRYABLE, pod_reason or "Failed", status.get("message") or "the pod failed")
    # Not finished: pending, running or being deleted.
    if base["deleting"]:
        return out(Category.TERMINATING, "Terminating", "the pod is being deleted")
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason") or ""
    if reason in CONFIG_WAITING_REASONS:
        started = parse_time(status.get("startTime")) or base["created_at"]
        if reason in IMMEDIATE_CONFIG_REASONS or now - started >= CONFIG_ERROR_GRACE_SECONDS:
            hint = "fix spec.image / spec.imagePullSecrets" if "Image" in reason else (
                "check the Secret in spec.s3.credentialsSecret and the pod settings")
            return out(Category.CONFIG_ERROR, reason, f"{waiting.get('message') or reason}; {hint}")
    if phase == "Running" and state.get("running"):
        return out(Category.RUNNING, "Running", "")
    if terminated:  # the container ended; a real kubelet sets the pod's terminal phase once it has cleaned up
        exit_reason = terminated.get("reason") or "no reason"
        return out(Category.TERMINATING, "ContainerExited",
                   f"the container exited with code {terminated.get('exitCode')} ({exit_reason}); "
                   "the kubelet is finishing the pod")
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    if scheduled is not None and scheduled.get("status") == "False":
        reason = scheduled.get("reason") or "Unschedulable"
        if reason == UNSCHEDULABLE:
            base["unschedulable_since"] = parse_time(scheduled.get("lastTransitionTime")) or base["created_at"]
        return out(Category.PENDING, reason, scheduled.get("message") or "")
    return out(Category.PENDING, reason or "Pending", waiting.get("message") or "")
