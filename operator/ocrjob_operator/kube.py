"""The operator's Kubernetes surface: what the controller and the storage factory ask of the cluster, over the
one `Client` (ocrjob_operator.api.client), with the operator's answers to the expected errors (gone, already
there) and every other failure left as a typed KubeError.

Blocking calls: used from worker threads only (never directly inside the event loop).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ocrjob_operator.api.client import Client, Conflict, NotFound, configure
from ocrjob_operator.api.names import ANNOTATION_KILL_MESSAGE, ANNOTATION_KILL_REASON
from ocrjob_operator.podspec import job_selector


class Kube:
    def __init__(self, client: Client | None = None) -> None:
        self.client = client or Client(configure())

    # -- OcrJobs ---------------------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.client.get_job(namespace, name)
        except NotFound:
            return None

    def patch_job_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.client.patch_job_status(namespace, name, patch)

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        """Delete this incarnation of the job (uid precondition); already gone or replaced: nothing to do."""
        with contextlib.suppress(NotFound, Conflict):
            self.client.delete_job(namespace, name, uid=uid, propagation_policy="Background")

    # -- pods ------------------------------------------------------------------------------------------
    def list_job_pods(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        return self.client.list_pods(namespace, job_selector(uid))

    def create_pod(self, pod: dict[str, Any]) -> bool:
        """Create the pod; False when it already exists (a deterministic name: the decision was made before)."""
        try:
            self.client.create_pod(pod["metadata"]["namespace"], pod)
        except Conflict:
            return False
        return True

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> bool:
        try:
            self.client.delete_pod(namespace, name, grace_seconds)
        except NotFound:
            return False
        return True

    def kill_pod(self, namespace: str, name: str, reason: str, message: str, deadline_seconds: int) -> None:
        """Stop a running pod but keep its object (the retry record): annotate why, then shorten its
        activeDeadlineSeconds so the kubelet stops it (SIGTERM, grace, SIGKILL) and marks it Failed."""
        patch = {"metadata": {"annotations": {ANNOTATION_KILL_REASON: reason, ANNOTATION_KILL_MESSAGE: message}},
                 "spec": {"activeDeadlineSeconds": max(1, deadline_seconds)}}
        with contextlib.suppress(NotFound):
            self.client.patch_pod(namespace, name, patch)

    # -- Secrets (only the one an OcrJob names, in its own namespace) ------------------------------------
    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            return self.client.read_secret(namespace, name)
        except NotFound:
            return None
