"""S3 I/O for the operator, with the credentials of the job being reconciled.

The operator plans, follows heartbeats and writes the job summary with the same credentials the job's
pods use: the Secret named in `spec.s3.credentialsSecret`, read from the job's own namespace (or
ambient credentials when the job names none). It can therefore never touch data the job's owner
could not. Clients are cached per credentials; Secrets are re-read at most every SECRET_TTL seconds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from inference_pod.job import layout, records
from inference_pod.job.shard_records import Heartbeat, ShardSummary
from inference_pod.job.storage import (
    ClientLimits,
    S3Settings,
    S3Storage,
    Storage,
    StorageError,
    make_s3_client,
    parse_location,
)
from ocrjob_operator.api.spec import JobSpec
from ocrjob_operator.kube import Kube

SECRET_TTL = 60.0


class CredentialsError(RuntimeError):
    """The Secret named by the job is missing or lacks a key; the message says which and how to fix it."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def fingerprint(self) -> str:
        raw = f"{self.access_key_id}\0{self.secret_access_key}\0{self.session_token or ''}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


# Bounded tighter than the loader's: the reconcile loop retries anyway.
OPERATOR_LIMITS = ClientLimits(max_attempts=3, retry_mode="standard", read_timeout=30, max_pool_connections=16)


class JobStorage:
    """The input and output locations of one job."""

    def __init__(self, spec: JobSpec, client: Any, settings: S3Settings) -> None:
        self.spec, self._client, self.settings = spec, client, settings
        self.source = self.open(spec.input_uri)
        self.dest = self.open(spec.output_uri)

    def open(self, uri: str) -> Storage:
        loc = parse_location(uri)
        if loc.scheme != "s3":
            raise StorageError(f"{uri!r} is not an s3:// location")
        return S3Storage(loc.bucket, loc.path, self.settings, client=self._client)

    def read_object(self, uri: str, max_bytes: int) -> bytes:
        """The object at `uri` (ObjectTooLarge, unread, when it has more than `max_bytes`)."""
        parent, name = parse_location(uri).split()
        return S3Storage(parent.bucket, parent.path, self.settings, client=self._client).get(name, max_bytes)

    def uri(self, key: str) -> str:
        return f"{self.dest.uri.rstrip('/')}/{key}"

    # A missing, half-written or foreign object reads as absent (the next read may succeed); other storage
    # errors propagate, typed.
    def read_heartbeat(self, job_id: str, shard: int) -> Heartbeat | None:
        return records.read(self.dest, layout.progress_key(job_id, shard), Heartbeat)

    def read_shard_summary(self, job_id: str, shard: int) -> ShardSummary | None:
        return records.read(self.dest, layout.shard_summary_key(job_id, shard), ShardSummary)

    def heartbeat(self, job_id: str, shard: int) -> dict[str, Any] | None:
        """`read_heartbeat` as the stored JSON object (what the controller works with)."""
        beat = self.read_heartbeat(job_id, shard)
        return None if beat is None else beat.to_dict()

    def shard_summary(self, job_id: str, shard: int) -> dict[str, Any] | None:
        """`read_shard_summary` as the stored JSON object (what the controller works with)."""
        summary = self.read_shard_summary(job_id, shard)
        return None if summary is None else summary.to_dict()


class StorageFactory:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._lock = threading.Lock()
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str] | None]] = {}
        self._clients: dict[tuple[Any, ...], Any] = {}

    def _secret(self, namespace: str, name: str) -> dict[str, str] | None:
        key = (namespace, name)
        with self._lock:
            cached = self._secrets.get(key)
        if cached and time.monotonic() - cached[0] < SECRET_TTL and cached[1] is not None:
            return cached[1]
        data = self.kube.read_secret(namespace, name)
        with self._lock:
            self._secrets[key] = (time.monotonic(), data)
        return data

    def credentials(self, namespace: str, spec: JobSpec) -> Credentials | None:
        ref = spec.s3.credentials
        if ref is None:
            return None
        data = self._secret(namespace, ref.name)
        if data is None:
            raise CredentialsError(
                f"Secret {namespace}/{ref.name} (spec.s3.credentialsSecret) does not exist: create it with keys "
                f"{ref.access_key_id_key} and {ref.secret_access_key_key}")
        missing = [k for k in (ref.access_key_id_key, ref.secret_access_key_key) if not data.get(k)]
        if missing:
            raise CredentialsError(f"Secret {namespace}/{ref.name} lacks key(s) {', '.join(missing)}: add them or set "
                                   "spec.s3.credentialsSecret.accessKeyIdKey/secretAccessKeyKey")
        token = data.get(ref.session_token_key) if ref.session_token_key else None
        return Credentials(data[ref.access_key_id_key], data[ref.secret_access_key_key], token)

    def for_job(self, namespace: str, spec: JobSpec) -> JobStorage:
        creds = self.credentials(namespace, spec)
        settings = S3Settings(endpoint_url=spec.s3.endpoint, region=spec.s3.region, path_style=spec.s3.path_style)
        key = (settings.endpoint_url, settings.region, settings.path_style, creds.fingerprint() if creds else None)
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            client = make_s3_client(
                settings, OPERATOR_LIMITS,
                (creds.access_key_id, creds.secret_access_key, creds.session_token) if creds else None,
            )
            with self._lock:
                self._clients[key] = client
        return JobStorage(spec, client, settings)
