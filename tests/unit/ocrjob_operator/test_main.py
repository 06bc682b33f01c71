"""`python -m ocrjob_operator`: the command line and the kopf settings chosen once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kopf
import pytest

from ocrjob_operator.__main__ import parse_args
from ocrjob_operator.api.names import FINALIZER, LEASE_NAME, OPERATOR_NAMESPACE
from ocrjob_operator.handlers import apply_settings

REPO = Path(__file__).resolve().parents[3]


def test_scope_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCRJOB_WATCH_NAMESPACES", raising=False)
    with pytest.raises(SystemExit):
        parse_args([])
    assert parse_args(["-n", "a", "-n", "b"]).namespace == ["a", "b"]
    assert parse_args(["--all-namespaces"]).all_namespaces
    monkeypatch.setenv("OCRJOB_WATCH_NAMESPACES", "x, y")
    assert parse_args([]).namespace == ["x", "y"]


def test_leader_election_and_metrics_address_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAMESPACE", "OCRJOB_METRICS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    args = parse_args(["-A"])
    assert args.leader_election and args.lease_name == LEASE_NAME and args.lease_namespace == OPERATOR_NAMESPACE
    assert args.metrics_address == "0.0.0.0"
    assert not parse_args(["-A", "--no-leader-election"]).leader_election
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    monkeypatch.setenv("OCRJOB_METRICS_ADDRESS", "127.0.0.1")
    args = parse_args(["-A", "--lease-name", "mine"])
    assert (args.lease_namespace, args.lease_name, args.metrics_address) == ("ops", "mine", "127.0.0.1")
    with pytest.raises(SystemExit):
        parse_args(["-A", "--liveness", "localhost:8080"])


def test_module_runs_and_explains_the_missing_scope() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "ocrjob_operator"], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)
    assert proc.returncode == 2 and "--all-namespaces" in proc.stderr


def test_kopf_settings_use_our_prefix_finalizer_and_timeouts() -> None:
    settings = kopf.OperatorSettings()
    apply_settings(settings)
    assert settings.persistence.finalizer == FINALIZER == "ocrjob.dev/finalizer"
    assert settings.persistence.progress_storage.prefix == "ocrjob.dev"
    assert settings.persistence.diffbase_storage.prefix == "ocrjob.dev"
    assert settings.watching.server_timeout and settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.watching.connect_timeout and settings.networking.request_timeout
    assert list(settings.watching.label_selectors.values()) == ["app.kubernetes.io/managed-by=ocrjob-operator"]


def test_importing_the_package_does_not_shadow_the_stdlib_operator() -> None:
    proc = subprocess.run([sys.executable, "-c", "import operator, ocrjob_operator; operator.itemgetter"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
