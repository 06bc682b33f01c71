"""The OcrJob's phases and condition types, declared once as string enums.

Members are `str`s equal to, hashed like and formatted as their values, so status dicts, JSON and lookups
by the plain strings read from the apiserver behave exactly as the bare strings did. Imports nothing of the
operator, the CLI or the data plane.
"""

from __future__ import annotations

from enum import Enum


class _ApiString(str, Enum):
    """A string of the API: `Phase.RUNNING == "Running"`, `f"{Phase.RUNNING}" == "Running"`."""

    __hash__ = str.__hash__  # Enum hashes by member name; a dict keyed by the plain strings must find members
    __format__ = str.__format__

    def __str__(self) -> str:
        return str.__str__(self)

    @classmethod
    def values(cls) -> list[str]:
        """The plain strings, in declaration order (for schemas, YAML and metric labels)."""
        return [member.value for member in cls]

    @classmethod
    def listing(cls) -> str:
        """'A, B or C', for descriptions."""
        values = cls.values()
        return f"{', '.join(values[:-1])} or {values[-1]}"


class Phase(_ApiString):
    """status.phase. Pending until planned; Succeeded and Failed are final."""

    PENDING = "Pending"
    PLANNING = "Planning"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    def is_finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)

    @classmethod
    def of(cls, value: str | None) -> Phase:
        """The phase a status shows: no phase yet reads as Pending. Raises ValueError for an unknown one."""
        return cls(value or cls.PENDING)


def is_finished(value: str | None) -> bool:
    """Whether a status.phase string (possibly missing or unknown) is final."""
    return value in (Phase.SUCCEEDED, Phase.FAILED)


class ConditionType(_ApiString):
    """status.conditions[].type, for `kubectl wait --for=condition=Succeeded`. StorageAvailable is False while
    storage does not answer (the operator's reads or shards exiting 74); Unschedulable is True while a shard pod
    fits no node."""

    PLANNED = "Planned"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STORAGE_AVAILABLE = "StorageAvailable"
    UNSCHEDULABLE = "Unschedulable"
