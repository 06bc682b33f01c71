"""The shard pod, built by a pure function from the OcrJob and the shard: same inputs, same pod.

Names are deterministic (`api.names.pod_name`), so creating a pod twice after an operator restart is a
harmless 409. The loader's environment is the settings table's (`inference_pod.job.settings.environment`)
over the job's values. Credentials come from the Secret the OcrJob references (secretKeyRef), never from
the OcrJob itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from inference_pod.job import settings
from inference_pod.job.settings import (
    ATTEMPT_ENV,
    DEFAULT_TERMINATION_LOG,
    JOB_NAME_ENV,
    POD_NAME_ENV,
    S3_ENDPOINT_ENV,
    S3_PATH_STYLE_ENV,
    S3_REGION_ENV,
    SHARD_ENV,
)
from ocrjob_operator.api.names import (
    ANNOTATION_MANIFEST,
    API_VERSION,
    CONTAINER_NAME,
    GPU_RESOURCE,
    KIND,
    LABEL_ATTEMPT,
    LABEL_COMPONENT,
    LABEL_JOB,
    LABEL_JOB_UID,
    LABEL_KUEUE_QUEUE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_SHARD,
    MANAGED_BY,
    pod_name,
)
from ocrjob_operator.api.spec import JobSpec

LOADER_GRACE_SECONDS: float = settings.default("grace_seconds")  # after SIGTERM the loader flushes within this
TERMINATION_GRACE_SECONDS = math.ceil(LOADER_GRACE_SECONDS) + 5
DEFAULT_REQUESTS = {"cpu": "1", "memory": "4Gi"}
# The root filesystem is read-only; the image keeps HOME and every cache under /tmp (manifests/docker), an emptyDir.
SCRATCH_VOLUME = "tmp"
SCRATCH_MOUNT = "/tmp"


@dataclass(frozen=True)
class JobRef:
    name: str
    namespace: str
    uid: str


def job_selector(uid: str) -> str:
    """The label selector for every pod of one OcrJob (by uid: a re-created job with the same name is another job)."""
    return f"{LABEL_JOB_UID}={uid}"


def manifest_uri(output_uri: str, key: str) -> str:
    return f"{output_uri.rstrip('/')}/{key}"


@dataclass(frozen=True)
class ShardIdentity:
    """Where a shard pod's shard index and attempt come from: fixed values (a pod the operator names), or
    fields of the pod (`fieldPath`s: a pod the Job controller makes for an index)."""

    shard: int | str
    attempt: int | str

    def env(self) -> list[dict[str, Any]]:
        return [{"name": name, "value": str(value)} if isinstance(value, int)
                else {"name": name, "valueFrom": {"fieldRef": {"fieldPath": value}}}
                for name, value in ((ATTEMPT_ENV, self.attempt), (SHARD_ENV, self.shard))]


def _env(spec: JobSpec, job: JobRef, identity: ShardIdentity, manifest: str) -> list[dict[str, Any]]:
    """The loader's settings (names from the settings table), then the pod's identity and how to reach S3."""
    plain = settings.environment({"manifest": manifest, "grace_seconds": LOADER_GRACE_SECONDS,
                                  **spec.loader_settings()})
    plain.update({JOB_NAME_ENV: job.name, S3_PATH_STYLE_ENV: "true" if spec.s3.path_style else "false"})
    for name, value in ((S3_ENDPOINT_ENV, spec.s3.endpoint), (S3_REGION_ENV, spec.s3.region)):
        if value is not None:
            plain[name] = value
    env: list[dict[str, Any]] = [*identity.env(), *({"name": k, "value": v} for k, v in plain.items())]
    env.append({"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    secret = spec.s3.credentials
    if secret is not None:
        refs = [("AWS_ACCESS_KEY_ID", secret.access_key_id_key),
                ("AWS_SECRET_ACCESS_KEY", secret.secret_access_key_key)]
        if secret.session_token_key:
            refs.append(("AWS_SESSION_TOKEN", secret.session_token_key))
        env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}} for var, key in refs]
    return env


def _resources(spec: JobSpec) -> dict[str, Any]:
    requests = dict(spec.resources.get("requests") or DEFAULT_REQUESTS)
    limits = dict(spec.resources.get("limits") or {})
    if spec.device == "gpu":
        # One pod per GPU: the loader pins it and verifies that exactly this one device is visible.
        limits[GPU_RESOURCE] = 1
        requests[GPU_RESOURCE] = 1
    out: dict[str, Any] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def shard_labels(job: JobRef) -> dict[str, str]:
    """The labels of every shard pod of `job`, whoever creates it (the operator, or the Job controller)."""
    return {LABEL_NAME: "ocrjob", LABEL_COMPONENT: "shard", LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: job.name,
            LABEL_JOB_UID: job.uid}


def labels(job: JobRef, shard: int, attempt: int, queue_name: str | None) -> dict[str, str]:
    out = {**shard_labels(job), LABEL_SHARD: str(shard), LABEL_ATTEMPT: str(attempt)}
    if queue_name:
        out[LABEL_KUEUE_QUEUE] = queue_name
    return out


def build_pod(job: JobRef, spec: JobSpec, shard: int, attempt: int, manifest: str) -> dict[str, Any]:
    """The shard pod for `attempt` of `shard`; `manifest` is the URI of the shard manifest."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(job.name, shard, attempt),
            "namespace": job.namespace,
            "labels": labels(job, shard, attempt, spec.queue_name),
            "annotations": {ANNOTATION_MANIFEST: manifest},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": pod_spec(job, spec, ShardIdentity(shard, attempt), manifest),
    }


def owner_reference(job: JobRef) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": job.name, "uid": job.uid, "controller": True,
            "blockOwnerDeletion": True}


def pod_spec(job: JobRef, spec: JobSpec, identity: ShardIdentity, manifest: str) -> dict[str, Any]:
    """The shard pod's spec: the loader's container, locked down, with the job's scheduling constraints."""
    tolerations = [dict(t) for t in spec.tolerations]
    if spec.device == "gpu" and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        # GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule so only GPU pods land there.
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    body: dict[str, Any] = {
        "restartPolicy": "Never",  # the operator retries, with a new attempt name and a classified reason
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "automountServiceAccountToken": False,  # the loader never calls the Kubernetes API
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER_NAME,
            "image": spec.image,
            "command": ["python", "-m", "inference_pod"],
            "env": _env(spec, job, identity, manifest),
            "resources": _resources(spec),
            "terminationMessagePath": DEFAULT_TERMINATION_LOG,
            # The loader writes a JSON shard summary there; the log tail is the fallback for crashes.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT}],
        }],
        "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {}}],
    }
    container = body["containers"][0]
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.image_pull_secrets:
        body["imagePullSecrets"] = [{"name": name} for name in spec.image_pull_secrets]
    if spec.node_selector:
        body["nodeSelector"] = dict(spec.node_selector)
    if tolerations:
        body["tolerations"] = tolerations
    if spec.affinity:
        body["affinity"] = spec.affinity
    if spec.priority_class_name:
        body["priorityClassName"] = spec.priority_class_name
    if spec.service_account_name:
        body["serviceAccountName"] = spec.service_account_name
    if spec.shard_deadline_seconds:
        body["activeDeadlineSeconds"] = spec.shard_deadline_seconds
    return body
