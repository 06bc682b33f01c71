"""Cluster access of the CLI: kubeconfig/context/namespace as kubectl resolves them, and apiserver errors that
say what to do. No cluster: kubeconfig files are written here, error bodies are the apiserver's real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_cli.kube import api_error, connect, kubeconfig_paths, rejection_lines


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


def test_namespace_comes_from_the_flag_then_the_context_then_default(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"dev": "team-a", "prod": None}, current="dev")
    env: dict[str, str] = {}
    target = connect(str(path), env=env)
    assert (target.namespace, target.context, target.server) == ("team-a", "dev", "https://127.0.0.1:6443")
    assert connect(str(path), namespace="mine", env=env).namespace == "mine"
    assert connect(str(path), context="prod", env=env).namespace == "default"
    assert "context 'prod'" in connect(str(path), context="prod", env=env).describe()


def test_the_bearer_token_is_sent(tmp_path: Path) -> None:
    # kubernetes 36.0.0 stores the token where it never reads it (kubernetes-client/python#2582).
    target = connect(str(kubeconfig(tmp_path / "config", {"dev": None}, "dev")), env={})
    assert target.configuration.auth_settings()["BearerToken"]["value"] == "Bearer secret-token"


def test_kubeconfig_env_merges_files_like_kubectl(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", {"a": "ns-a"}, current="a")
    second = kubeconfig(tmp_path / "b", {"b": "ns-b"}, current="b")
    env = {"KUBECONFIG": f"{first}:{tmp_path / 'missing'}:{second}"}
    assert kubeconfig_paths(None, env) == [str(first), str(tmp_path / "missing"), str(second)]
    assert connect(env=env).namespace == "ns-a"  # the first file's current-context wins
    assert connect(context="b", env=env).namespace == "ns-b"


def test_kubeconfig_problems_are_explained(tmp_path: Path) -> None:
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
    error = api_error(code, body.encode(), "creating ocrjob ns/x")
    assert error.code is exit_code and says in error.message and error.message.startswith("creating ocrjob ns/x")
    assert error.transient == (code == 500)


def test_validation_causes_are_shown_verbatim() -> None:
    doc = json.loads(INVALID)
    assert rejection_lines(doc) == [f"{c['field']}: {c['message']}" for c in doc["details"]["causes"]]
    assert rejection_lines({"message": "only a message"}) == ["only a message"]


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
