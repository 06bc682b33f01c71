"""Finishing an OcrJob: what goes into the job summary beside the shard summaries, which finished pods the
cleanup policy removes, and when the TTL deletes the job — pure functions; the controller does the I/O."""

from __future__ import annotations

from typing import Any

from ocrjob_operator.api.spec import JobSpec
from ocrjob_operator.classify import parse_time
from ocrjob_operator.decide import Decision, ShardPhase, ShardState


def summary_extra(meta: dict[str, Any], states: list[ShardState], decision: Decision) -> dict[str, Any]:
    """The operator's part of summary.json: the Kubernetes object, its verdict (a shard that failed before
    writing a summary counts as failed here), the failed shards and every attempt."""
    return {
        "kubernetes": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
        "status": decision.outcome.value.lower() if decision.outcome else "incomplete",
        "failed_shards": [{"index": s.index, "reason": s.reason, "message": s.message}
                          for s in states if s.phase is ShardPhase.FAILED],
        "attempts": [
            {"shard": p.shard, "attempt": p.attempt, "pod": p.name, "node": p.node, "category": p.category.value,
             "reason": p.reason, "exit_code": p.exit_code,
             "seconds": round(p.finished_at - p.started_at, 3) if p.finished_at and p.started_at else None,
             "device": (p.summary or {}).get("device")}
            for s in states for p in s.attempts],
    }


def pods_to_clean(pods: list[dict[str, Any]], policy: str) -> list[str]:
    """Names of the finished pods `spec.podCleanupPolicy` removes: Succeeded ones (DeleteSucceeded), all
    finished ones (Delete), none (Keep)."""
    if policy == "Keep":
        return []
    out = []
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Succeeded" or (policy == "Delete" and phase == "Failed"):
            out.append(pod["metadata"]["name"])
    return out


def ttl_remaining(spec: JobSpec, status: dict[str, Any], now: float) -> float | None:
    """Seconds until the TTL deletes a finished job (<= 0: now); None without a TTL."""
    if spec.ttl_seconds_after_finished is None:
        return None
    finished = parse_time(status.get("completionTime")) or now
    return finished + spec.ttl_seconds_after_finished - now
