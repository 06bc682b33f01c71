"""The loader's exit codes (sysexits-style). The operator classifies shard pods by them; the README lists them."""

SUCCEEDED = 0  # every item has a result object: text, or an error record for a bad file
USAGE = 64  # the command line is wrong
INPUT_ERROR = 65  # the shard manifest or configuration is invalid: retrying cannot help
DEVICE_UNAVAILABLE = 69  # the requested device is not the one visible (wrong GPU count, no CUDA build)
SYSTEMIC = 70  # storage unreachable, model failed to load, a worker died, no progress: worth a retry
INTERRUPTED = 75  # SIGTERM/SIGINT: stopped cleanly, finished items kept; a rerun resumes
CREDENTIALS = 77  # storage refused the credentials

DESCRIPTIONS = {
    SUCCEEDED: "succeeded",
    USAGE: "usage error",
    INPUT_ERROR: "invalid shard manifest or configuration (not retried)",
    DEVICE_UNAVAILABLE: "requested device unavailable",
    SYSTEMIC: "systemic failure (retried)",
    INTERRUPTED: "interrupted (resumable)",
    CREDENTIALS: "storage credentials refused",
}
