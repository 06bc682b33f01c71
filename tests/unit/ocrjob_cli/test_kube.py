"""Cluster access of the CLI: each configuration problem and each typed Kubernetes error becomes one exit code and
a message that says what to do (resolution and classification: tests/unit/ocrjob_operator/api/test_client.py).
No cluster: kubeconfig files are written here, error bodies are the apiserver's real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_cli.kube import cli_error, connect
from ocrjob_operator.api.client import Forbidden, NotFound, QuotaExceeded, Unavailable, answer_error


def kubeconfig(path: Path, contexts: dict[str, str | None], current: str, server: str = "https://127.0.0.1:6443",
               token: str = "secret-token") -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
                     for name, ns in contexts.items()],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_kubeconfig_problems_are_explained(tmp_path: Path) -> None:
    # The caller's --kubeconfig/--context naming nothing is a usage error; a broken environment is CLUSTER.
    path = kubeconfig(tmp_path / "config", {"dev": None}, "dev")
    with pytest.raises(CliError) as err:
        connect(str(tmp_path / "nope"), env={})
    assert err.value.code is ExitCode.USAGE and "no such file" in err.value.message
    with pytest.raises(CliError) as err:
        connect(str(path), context="staging", env={})
    assert err.value.code is ExitCode.USAGE and "no such context" in err.value.message and "dev" in err.value.message
    with pytest.raises(CliError) as err:
        connect(env={"KUBECONFIG": str(tmp_path / "none")})
    assert err.value.code is ExitCode.CLUSTER and "no kubeconfig found" in err.value.message
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\ncurrent-context: x\n"
                      "contexts: [{name: x, context: {cluster: nowhere, user: nobody}}]\n")
    with pytest.raises(CliError) as err:
        connect(str(broken), env={})
    assert err.value.code is ExitCode.CLUSTER and "not usable" in err.value.message
    assert connect(str(path), namespace="mine", env={}).namespace == "mine"


def status(code: int, reason: str, message: str, **details: Any) -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                       "reason": reason, "details": details, "code": code})


INVALID = status(422, "Invalid", 'OcrJob.ocrjob.dev "x" is invalid: [spec.device: Unsupported value: "tpu": '
                 'supported values: "gpu", "cpu", spec.parallelism: Invalid value: 0: ...]', name="x",
                 group="ocrjob.dev", kind="OcrJob", causes=[
                     {"reason": "FieldValueNotSupported", "message": 'Unsupported value: "tpu": supported values: '
                      '"gpu", "cpu"', "field": "spec.device"},
                     {"reason": "FieldValueInvalid", "message": "Invalid value: 0: spec.parallelism in body should be "
                      "greater than or equal to 1", "field": "spec.parallelism"}])


@pytest.mark.parametrize(("code", "body", "exit_code", "says"), [
    (404, "404 page not found\n", ExitCode.CLUSTER, "kubectl apply -k crds/"),
    (404, status(404, "NotFound", 'namespaces "nons" not found', name="nons", kind="namespaces"),
     ExitCode.NOT_FOUND, "create the namespace"),
    (404, status(404, "NotFound", 'ocrjobs.ocrjob.dev "x" not found', name="x", kind="ocrjobs"),
     ExitCode.NOT_FOUND, 'ocrjobs.ocrjob.dev "x" not found'),
    (409, status(409, "AlreadyExists", 'ocrjobs.ocrjob.dev "x" already exists'), ExitCode.REJECTED,
     "already exists"),
    (422, INVALID, ExitCode.REJECTED, '  spec.device: Unsupported value: "tpu": supported values: "gpu", "cpu"\n'
                                      "  spec.parallelism: Invalid value: 0: spec.parallelism in body should be "
                                      "greater than or equal to 1"),
    (401, status(401, "Unauthorized", "Unauthorized"), ExitCode.CLUSTER, "refused the credentials"),
    (403, status(403, "Forbidden", 'ocrjobs.ocrjob.dev is forbidden: User "bob" cannot create resource'),
     ExitCode.CLUSTER, 'forbidden: ocrjobs.ocrjob.dev is forbidden: User "bob" cannot create resource'),
    (500, "etcdserver: request timed out", ExitCode.CLUSTER, "answered 500: etcdserver: request timed out"),
])
def test_apiserver_errors(code: int, body: str, exit_code: ExitCode, says: str) -> None:
    typed = answer_error(code, body.encode())
    error = cli_error(typed, "creating ocrjob ns/x")
    assert error.code is exit_code and says in error.message and error.message.startswith("creating ocrjob ns/x")
    assert error.transient == (code == 500) and error.cause is typed


def test_transient_answers_and_no_answer() -> None:
    for code in (502, 503, 429):
        error = cli_error(answer_error(code, b"busy"), "listing ocrjobs")
        assert error.code is ExitCode.CLUSTER and error.transient and f"answered {code}: busy" in error.message
    error = cli_error(Unavailable(0, "Connection refused"), "listing ocrjobs")
    assert error.code is ExitCode.CLUSTER and error.transient
    assert error.message == ("listing ocrjobs: cannot reach the apiserver: Connection refused; check that the "
                             "cluster is up and that --kubeconfig/--context point at it")
    assert not cli_error(answer_error(405, b"no"), "x").transient


def test_decisions_read_the_cause_not_the_message() -> None:
    quota = cli_error(answer_error(403, status(403, "Forbidden", "exceeded quota: q")), "creating pod")
    assert quota.code is ExitCode.CLUSTER and isinstance(quota.cause, QuotaExceeded)
    assert isinstance(quota.cause, Forbidden)
    gone = cli_error(answer_error(404, status(404, "NotFound", 'secrets "s" not found', kind="secrets")), "reading")
    assert gone.code is ExitCode.NOT_FOUND and isinstance(gone.cause, NotFound)


def test_an_unreachable_apiserver_is_a_cluster_error(tmp_path: Path) -> None:
    from ocrjob_cli.kube import OcrJobApi

    path = kubeconfig(tmp_path / "config", {"dev": None}, "dev", server="https://127.0.0.1:1")
    api = OcrJobApi(connect(str(path), env={}))
    with pytest.raises(CliError) as err:
        api.list_jobs()
    assert err.value.code is ExitCode.CLUSTER and err.value.transient
    assert "cannot reach context 'dev' (https://127.0.0.1:1)" in err.value.message


def test_a_current_context_that_does_not_exist(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"dev": None}, current="gone")
    with pytest.raises(CliError) as err:
        connect(str(path), env={})
    assert err.value.code is ExitCode.CLUSTER and "current-context 'gone'" in err.value.message
    assert connect(str(path), context="dev", env={}).context == "dev"
