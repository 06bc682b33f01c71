"""The loader's exit codes (sysexits-style). The operator classifies shard pods by them; the README lists them."""

from __future__ import annotations

from inference_pod.job.errors import (
    CredentialsRefused,
    InvalidRequest,
    PermissionDenied,
    StorageError,
    StorageUnavailable,
)

SUCCEEDED = 0  # every item has a result object: text, or an error record for a bad file
USAGE = 64  # the command line is wrong
INPUT_ERROR = 65  # the shard manifest or configuration is invalid: retrying cannot help
DEVICE_UNAVAILABLE = 69  # the requested device is not the one visible (zero or several GPUs): another node may do
SYSTEMIC = 70  # model failed to load, a worker died, no progress, unclassified storage error: worth a retry
STORAGE_UNAVAILABLE = 74  # EX_IOERR: storage unreachable, 5xx, throttling: retried free (an outage, not the shard)
INTERRUPTED = 75  # SIGTERM/SIGINT: stopped cleanly, finished items kept; a rerun resumes
CREDENTIALS = 77  # storage refused the credentials
# EX_CONFIG: the image cannot serve the requested device at all (a GPU asked of a Paddle or ONNX Runtime build
# without CUDA): no retry and no other node can help, so the job fails fast. Free: 78 has no other meaning here.
DEVICE_UNSUPPORTED = 78

DESCRIPTIONS = {
    SUCCEEDED: "succeeded",
    USAGE: "usage error",
    INPUT_ERROR: "invalid shard manifest or configuration (not retried)",
    DEVICE_UNAVAILABLE: "requested device unavailable (zero or several GPUs visible; retried)",
    SYSTEMIC: "systemic failure (retried)",
    STORAGE_UNAVAILABLE: "storage unavailable (retried, budget not spent)",
    INTERRUPTED: "interrupted (resumable)",
    CREDENTIALS: "storage credentials refused",
    DEVICE_UNSUPPORTED: "the image has no CUDA build for device gpu (not retried)",
}


def for_storage_error(exc: StorageError) -> int:
    """The one mapping from a storage error's type to the exit code of the shard (or `ocrjob run`) it ends."""
    if isinstance(exc, (CredentialsRefused, PermissionDenied)):
        return CREDENTIALS  # 77, EX_NOPERM: not retried, the job fails fast naming the Secret
    if isinstance(exc, InvalidRequest):
        return INPUT_ERROR  # no such bucket, a key outside the root: retrying cannot help
    if isinstance(exc, StorageUnavailable):
        return STORAGE_UNAVAILABLE  # 74, EX_IOERR: unreachable, 5xx, throttling: an outage, retried free
    return SYSTEMIC  # unclassified: retried, counted
