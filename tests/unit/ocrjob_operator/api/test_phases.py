"""Phases and condition types: enums that read, hash, print and serialize as the plain strings of the API."""

from __future__ import annotations

import json

import pytest
import yaml

from ocrjob_operator.api.phases import ConditionType, Phase, is_finished


def test_the_declared_values() -> None:
    assert Phase.values() == ["Pending", "Planning", "Running", "Suspended", "Succeeded", "Failed"]
    assert ConditionType.values() == ["Planned", "Running", "Suspended", "Succeeded", "Failed",
                                    "StorageAvailable", "Unschedulable"]
    assert Phase.listing() == "Pending, Planning, Running, Suspended, Succeeded or Failed"


def test_only_succeeded_and_failed_are_final() -> None:
    assert [p for p in Phase if p.is_finished()] == [Phase.SUCCEEDED, Phase.FAILED]
    assert is_finished("Succeeded") and is_finished("Failed")
    assert not is_finished("Running") and not is_finished(None) and not is_finished("Unknown")


def test_members_behave_as_their_strings() -> None:
    assert Phase.RUNNING == "Running" and hash(Phase.RUNNING) == hash("Running")
    assert {"Running": 1}[Phase.RUNNING] == 1 and {Phase.RUNNING: 1}["Running"] == 1
    assert f"{Phase.RUNNING}" == str(Phase.RUNNING) == "Running"
    assert json.dumps({"phase": Phase.RUNNING, "type": ConditionType.PLANNED}) == \
        '{"phase": "Running", "type": "Planned"}'
    assert yaml.safe_load(yaml.safe_dump(Phase.values())) == Phase.values()


def test_reading_a_status_phase() -> None:
    assert Phase.of(None) is Phase.PENDING and Phase.of("") is Phase.PENDING and Phase.of("Failed") is Phase.FAILED
    with pytest.raises(ValueError):
        Phase.of("Exploded")
