"""Exit codes of the cluster commands (`ocrjob submit|status|list|logs|cancel|suspend|resume|results|retry`).

Small numbers, kept apart from the loader's sysexits-style codes (inference_pod/job/exit_codes.py: 64-78), so
that a CI script can never mistake "the job failed on the cluster" for "the local loader failed". 2 is
click's own code for a bad command line, so every usage error reports 2, whether the parser or the CLI
found it. 1 stays what Python uses for an unexpected crash.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    SUCCEEDED = 0  # the job succeeded (`--wait`), or the command did what it was asked
    ERROR = 1  # unexpected error (a bug): Python's own code for an uncaught exception
    USAGE = 2  # bad flags, unreadable -f file, missing required values (click uses 2 too)
    FAILED = 3  # the job finished with phase Failed (`--wait`)
    TIMEOUT = 4  # `--timeout` passed before the job finished; the job keeps running unless --cancel-on-timeout
    REJECTED = 5  # the apiserver refused the OcrJob (422 Invalid, name taken), or a pre-check failed (no Secret)
    CLUSTER = 6  # cannot use the cluster: no kubeconfig, unreachable, credentials refused, forbidden, CRD missing
    NOT_FOUND = 7  # the named OcrJob (or its namespace, pods, or summary) does not exist
    STORAGE = 8  # S3 could not be read or written (results, retry)
    ITEM_ERRORS = 9  # the job succeeded but items have error records, and --fail-on-item-errors was given
    INTERRUPTED = 130  # Ctrl-C while waiting (128 + SIGINT); the job keeps running


DESCRIPTIONS: dict[ExitCode, str] = {
    ExitCode.SUCCEEDED: "succeeded (with --wait: the job's phase is Succeeded)",
    ExitCode.ERROR: "unexpected error (a bug: please report it with the traceback)",
    ExitCode.USAGE: "usage error: bad flags or values, unreadable -f file",
    ExitCode.FAILED: "the job failed (phase Failed); the message says which shard and why",
    ExitCode.TIMEOUT: "--timeout passed before the job finished (it keeps running unless --cancel-on-timeout); "
                      "`cancel`: the job was not gone in time",
    ExitCode.REJECTED: "rejected: invalid spec (the apiserver's message is shown), name taken, "
                       "missing credentials Secret, or the job is not in a state for this command",
    ExitCode.CLUSTER: "cannot use the cluster: no kubeconfig, unreachable, credentials refused, forbidden, "
                      "or the OcrJob CRD is not installed",
    ExitCode.NOT_FOUND: "the OcrJob, its namespace, its pods or its summary do not exist",
    ExitCode.STORAGE: "S3 could not be read or written (results, retry)",
    ExitCode.ITEM_ERRORS: "the job succeeded but some documents have error records (only with --fail-on-item-errors)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C) while waiting; the job keeps running",
}


class CliError(Exception):
    """An error the user can act on: the message says what went wrong and how to fix it."""

    def __init__(self, code: ExitCode, message: str, transient: bool = False, cause: Exception | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient  # no answer, or a 5xx/429: worth retrying while a wait's deadline allows
        self.cause = cause  # the typed error it stands for (a KubeError), for decisions: never read the message


def markdown_table() -> str:
    """The README's exit-code table, generated from DESCRIPTIONS (`python -c 'from ocrjob_cli.exit import
    markdown_table; print(markdown_table())'`)."""
    rows = [f"| {int(code)} | `{code.name}` | {text} |" for code, text in DESCRIPTIONS.items()]
    return "\n".join(["| code | name | meaning |", "| --- | --- | --- |", *rows])
