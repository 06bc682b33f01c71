"""The one Kubernetes client: kubeconfig/context/namespace resolved as kubectl resolves them, and every failed
request classified once into a typed error. No cluster: kubeconfig files are written here, error bodies are the
apiserver's real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from ocrjob_operator.api.client import (
    ApiNotInstalled,
    BadArgument,
    Client,
    ConfigError,
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    NotFound,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    answer_error,
    kube_error,
    kubeconfig_paths,
    load_config,
    rejection_lines,
)


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


# -- configuration -----------------------------------------------------------------------------------------------
def test_namespace_comes_from_the_flag_then_the_context_then_default(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"dev": "team-a", "prod": None}, current="dev")
    env: dict[str, str] = {}
    target = load_config(str(path), env=env)
    assert (target.namespace, target.context, target.server) == ("team-a", "dev", "https://127.0.0.1:6443")
    assert load_config(str(path), namespace="mine", env=env).namespace == "mine"
    assert load_config(str(path), context="prod", env=env).namespace == "default"
    assert "context 'prod'" in load_config(str(path), context="prod", env=env).describe()


def test_the_bearer_token_is_sent(tmp_path: Path) -> None:
    # kubernetes 36.0.0 stores the token where it never reads it (kubernetes-client/python#2582).
    target = load_config(str(kubeconfig(tmp_path / "config", {"dev": None}, "dev")), env={})
    assert target.configuration.auth_settings()["BearerToken"]["value"] == "Bearer secret-token"


def test_kubeconfig_env_merges_files_like_kubectl(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", {"a": "ns-a"}, current="a")
    second = kubeconfig(tmp_path / "b", {"b": "ns-b"}, current="b")
    env = {"KUBECONFIG": f"{first}:{tmp_path / 'missing'}:{second}"}
    assert kubeconfig_paths(None, env) == [str(first), str(tmp_path / "missing"), str(second)]
    assert load_config(env=env).namespace == "ns-a"  # the first file's current-context wins
    assert load_config(context="b", env=env).namespace == "ns-b"


def test_kubeconfig_problems_are_typed_and_explained(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"dev": None}, "dev")
    with pytest.raises(BadArgument) as err:
        load_config(str(tmp_path / "nope"), env={})
    assert "no such file" in err.value.message
    with pytest.raises(BadArgument) as err:
        load_config(str(path), context="staging", env={})
    assert "no such context" in err.value.message and "dev" in err.value.message
    with pytest.raises(ConfigError) as err:
        load_config(env={"KUBECONFIG": str(tmp_path / "none")})
    assert not isinstance(err.value, BadArgument) and "no kubeconfig found" in err.value.message
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\ncurrent-context: x\n"
                      "contexts: [{name: x, context: {cluster: nowhere, user: nobody}}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(broken), env={})
    assert not isinstance(err.value, BadArgument) and "not usable" in err.value.message
    (tmp_path / "list").write_text("- not a mapping\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "list"), env={})
    assert "not a kubeconfig" in err.value.message


def test_a_current_context_that_does_not_exist(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"dev": None}, current="gone")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert not isinstance(err.value, BadArgument) and "current-context 'gone'" in err.value.message
    assert load_config(str(path), context="dev", env={}).context == "dev"


# -- errors ------------------------------------------------------------------------------------------------------
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
QUOTA = status(403, "Forbidden", 'pods "job-s0-a0" is forbidden: exceeded quota: compute, requested: cpu=4, used: '
               "cpu=8, limited: cpu=8", name="job-s0-a0", kind="pods")


def api_exception(code: int, body: str | None, reason: str = "Reason") -> ApiException:
    """What the kubernetes client raises for an answer (with `_preload_content=False` the body is bytes)."""
    exc = ApiException(status=code, reason=reason)
    exc.body = body.encode() if body is not None else None
    return exc


@pytest.mark.parametrize(("code", "body", "kind", "message"), [
    (401, status(401, "Unauthorized", "Unauthorized"), Unauthorized, "Unauthorized"),
    (403, status(403, "Forbidden", 'ocrjobs.ocrjob.dev is forbidden: User "bob" cannot create resource'), Forbidden,
     'ocrjobs.ocrjob.dev is forbidden: User "bob" cannot create resource'),
    (403, QUOTA, QuotaExceeded, "exceeded quota: compute"),
    (404, "404 page not found\n", ApiNotInstalled, "404 page not found"),
    (404, status(404, "NotFound", 'ocrjobs.ocrjob.dev "x" not found', name="x", kind="ocrjobs"), NotFound,
     'ocrjobs.ocrjob.dev "x" not found'),
    (409, status(409, "AlreadyExists", 'ocrjobs.ocrjob.dev "x" already exists'), Conflict, "already exists"),
    (422, INVALID, Invalid, 'OcrJob.ocrjob.dev "x" is invalid'),
    (400, "not json at all", Invalid, "not json at all"),
    (500, "etcdserver: request timed out", Unavailable, "etcdserver: request timed out"),
    (503, None, Unavailable, "Reason"),  # no body: the reason phrase
    (429, status(429, "TooManyRequests", "too many requests"), Unavailable, "too many requests"),
    (0, None, Unavailable, "Reason"),  # the client's own status 0: a TLS failure, no answer
    (405, status(405, "MethodNotAllowed", "the server does not allow this method"), KubeError, "does not allow"),
])
def test_every_answer_has_one_type(code: int, body: str | None, kind: type[KubeError], message: str) -> None:
    error = kube_error(api_exception(code, body))
    assert type(error) is kind and error.status == code and message in error.message and error.reason == "Reason"
    assert answer_error(code, body.encode() if body else None, "Reason").__dict__ == error.__dict__


def test_quota_is_a_forbidden_that_is_not_the_specs_fault() -> None:
    quota, rbac = answer_error(403, QUOTA), answer_error(403, status(403, "Forbidden", "pods is forbidden: User x"))
    assert isinstance(quota, QuotaExceeded) and isinstance(quota, Forbidden)
    assert isinstance(rbac, Forbidden) and not isinstance(rbac, QuotaExceeded)


def test_not_found_keeps_the_kind() -> None:
    missing = answer_error(404, status(404, "NotFound", 'namespaces "nons" not found', name="nons", kind="namespaces"))
    assert isinstance(missing, NotFound) and missing.kind == "namespaces"
    assert not isinstance(answer_error(404, "404 page not found"), NotFound)  # the API itself is missing


def test_validation_causes_are_kept_verbatim() -> None:
    doc = json.loads(INVALID)
    error = answer_error(422, INVALID)
    assert error.causes == tuple(f"{c['field']}: {c['message']}" for c in doc["details"]["causes"])
    assert rejection_lines(doc) == [f"{c['field']}: {c['message']}" for c in doc["details"]["causes"]]
    assert rejection_lines({"message": "only a message"}) == ["only a message"]
    assert answer_error(422, status(422, "Invalid", "only a message")).causes == ("only a message",)


def test_no_answer_at_all_is_unavailable() -> None:
    refused = urllib3.exceptions.MaxRetryError(None, "/apis", reason=ConnectionRefusedError("Connection refused"))
    error = kube_error(refused)
    assert isinstance(error, Unavailable) and error.status == 0 and "Connection refused" in error.message
    assert isinstance(kube_error(OSError("no route to host")), Unavailable)
    assert kube_error(ValueError("a bug")) is None  # not a Kubernetes failure: it surfaces as it is


def test_only_typed_errors_leave_the_client(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"dev": None}, "dev", server="https://127.0.0.1:1")
    client = Client(load_config(str(path), env={}).configuration)
    client.configuration.retries = 0
    with pytest.raises(Unavailable) as err:
        client.list_jobs("ns")
    assert err.value.status == 0 and isinstance(err.value.__cause__, urllib3.exceptions.HTTPError)
