"""Typed storage and planning errors: what every decision about a failed storage call or plan reads (never the
message text).

Each type maps once to a loader exit code (`exit_codes.for_storage_error`) and once to the operator's
reaction (`ocrjob_operator.reactions`). Messages are for people: they say what went wrong and how to fix it,
and they may contain any key or prefix, so nothing may branch on them.
"""

from __future__ import annotations


class StorageError(RuntimeError):
    """A storage operation failed for a reason that is not about one missing object (an unclassified failure is
    treated as possibly transient)."""


class ObjectNotFound(StorageError, KeyError):
    """The object does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ObjectExists(StorageError):
    """A create-if-absent found the object already there (S3 412 PreconditionFailed or 409
    ConditionalRequestConflict, an existing file): someone else wrote it first."""


class CredentialsRefused(StorageError):
    """No credentials, or the store rejected them (unknown key id, bad signature, expired token)."""


class PermissionDenied(StorageError):
    """The credentials are valid but not allowed to do this (bucket policy, IAM, file mode)."""


class StorageUnavailable(StorageError):
    """The store could not be reached or did not answer usefully: connection refused, timeout, 5xx, throttling.
    Worth retrying with backoff."""


class InvalidRequest(StorageError):
    """The request cannot succeed as written: no such bucket, a malformed name, a key outside the root.
    Retrying does not help; the location or configuration must change."""


class ObjectTooLarge(InvalidRequest):
    """The object is larger than its reader may hold in memory (the bound is in the message). A reader refuses it
    before reading it: an object anyone with write access to the bucket can replace must not be able to exhaust
    the memory of the process that reads it (the operator reads records in tenants' buckets)."""


class ConditionalWriteIgnored(InvalidRequest):
    """The store accepted a create-if-absent of an object that already existed: it ignores If-None-Match, so it
    cannot guarantee that a job's plan is committed exactly once. Another store (or version) is needed."""


class PlanError(ValueError):
    """The inputs to planning are wrong; the message says how to fix them."""


class PlanTooLarge(PlanError):
    """The listing holds more than one planner may keep in memory (`plan_table.MAX_TABLE_BYTES`): the job must be
    split (several jobs, or input manifests). Raised while listing, before the planner's memory grows past the bound."""
