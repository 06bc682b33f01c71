"""How the operator reacts to a failed storage or Secret access, decided by the error's type alone.

The one place that maps the storage contract's typed errors (`inference_pod.job.errors`) to what the operator
does; the loader's mapping of the same types to exit codes is `inference_pod.job.exit_codes.for_storage_error`.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference_pod.job.errors import (
    ConditionalWriteIgnored,
    CredentialsRefused,
    InvalidRequest,
    ObjectNotFound,
    ObjectTooLarge,
    PermissionDenied,
    StorageError,
)
from ocrjob_operator.storage import CredentialsError


@dataclass(frozen=True)
class Reaction:
    fail_job: bool  # True: fail the job now with `reason`; False: retry with backoff (bounded by the caller)
    reason: str
    hint: str = ""


def to_storage_failure(exc: StorageError | CredentialsError) -> Reaction:
    if isinstance(exc, CredentialsRefused):
        return Reaction(True, "CredentialsRefused", "fix the Secret named in spec.s3.credentialsSecret")
    if isinstance(exc, PermissionDenied):
        return Reaction(True, "AccessDenied", "grant the job's credentials access to spec.input and spec.output, or "
                                              "name other credentials in spec.s3.credentialsSecret")
    if isinstance(exc, ConditionalWriteIgnored):  # before InvalidRequest, its base: the store, not the location
        return Reaction(True, "ConditionalWriteUnsupported", "use an S3 endpoint that honours conditional writes "
                                                             "(If-None-Match) for spec.output, and create a new OcrJob")
    if isinstance(exc, InvalidRequest):
        return Reaction(True, "InvalidLocation", "fix spec.input / spec.output (or create the bucket) and create a "
                                                 "new OcrJob")
    # A Secret not created yet, storage unreachable, 5xx, throttling, anything unclassified: may pass.
    return Reaction(False, "WaitingForStorage")


def to_planning_failure(exc: StorageError | CredentialsError, reading_manifest: bool) -> Reaction:
    """Planning: like any storage access, and a missing spec.input.manifest is permanent too (retrying cannot
    create it)."""
    if isinstance(exc, ObjectNotFound) and reading_manifest:
        return Reaction(True, "InputManifestNotFound", "create the key list at spec.input.manifest (or remove the "
                                                       "field to OCR the whole prefix) and create a new OcrJob")
    if isinstance(exc, ObjectTooLarge) and reading_manifest:  # before InvalidRequest, its base
        return Reaction(True, "InputManifestTooLarge", "split the key list into several OcrJobs of fewer keys each")
    return to_storage_failure(exc)
