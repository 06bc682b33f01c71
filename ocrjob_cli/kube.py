"""Cluster access for the `ocrjob` cluster commands.

`connect()` resolves the cluster the way kubectl does (`ocrjob_operator.api.client.load_config`: `--kubeconfig`,
`--context`, `-n`, in-cluster). `OcrJobApi` is the small surface the commands use, over the one `Client`;
every Kubernetes error becomes a `CliError` that says what went wrong and how to fix it (`cli_error`, pure: one
exit code per error type). `kubernetes` is imported inside functions: `ocrjob run` must not pay for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from ocrjob_cli.exit import CliError, ExitCode
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
    Target,
    Unauthorized,
    Unavailable,
)
from ocrjob_operator.api.names import CRD_NAME, LABEL_JOB

CRD_INSTALL = (f"the OcrJob CRD ({CRD_NAME}) is not installed in this cluster: install it with "
               "`kubectl apply -k crds/` (or `kubectl apply -k manifests/` for the CRD and the operator)")

def connect(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
            env: Mapping[str, str] | None = None) -> Target:
    try:
        from ocrjob_operator.api.client import load_config

        return load_config(kubeconfig, context, namespace, env)
    except ImportError as exc:
        raise CliError(ExitCode.USAGE, f"the cluster commands need the kubernetes client ({exc}); install "
                                       "`ocrjob[cli]`") from exc
    except BadArgument as exc:
        raise CliError(ExitCode.USAGE, exc.message) from exc
    except ConfigError as exc:
        raise CliError(ExitCode.CLUSTER, exc.message) from exc


# -- errors ------------------------------------------------------------------------------------------------------
def cli_error(error: KubeError, what: str, target: Target | None = None) -> CliError:
    """The CliError for a failed request, for a person: one exit code per error type. `what` says what was
    attempted; the CliError keeps `error` as its `cause`."""
    code, text = _explain(error, what, target)
    return CliError(code, text, transient=isinstance(error, Unavailable), cause=error)


def _explain(error: KubeError, what: str, target: Target | None) -> tuple[ExitCode, str]:
    where = f" at {target.describe()}" if target else ""
    message = error.message
    if isinstance(error, Unauthorized):
        return ExitCode.CLUSTER, (f"{what}: the apiserver{where} refused the credentials (401 Unauthorized): refresh "
                                  "them (log in again) or choose another --context")
    if isinstance(error, Forbidden):
        return ExitCode.CLUSTER, (f"{what}: forbidden: {message}; ask a cluster admin for the RBAC permission, or use "
                                  "another --context / -n")
    if isinstance(error, ApiNotInstalled):
        return ExitCode.CLUSTER, f"{what}: {CRD_INSTALL}"
    if isinstance(error, NotFound) and error.kind == "namespaces":
        return ExitCode.NOT_FOUND, f"{what}: {message}: create the namespace or pass another -n"
    if isinstance(error, NotFound):
        return ExitCode.NOT_FOUND, f"{what}: {message}"
    if isinstance(error, Conflict):
        return ExitCode.REJECTED, f"{what}: {message}"
    if isinstance(error, Invalid):
        lines = error.causes or (message,)
        return ExitCode.REJECTED, f"{what}: the apiserver rejected it:\n" + "\n".join(f"  {x}" for x in lines)
    if isinstance(error, Unavailable) and error.status == 0:
        return ExitCode.CLUSTER, (f"{what}: cannot reach {target.describe() if target else 'the apiserver'}: "
                                  f"{message}; check that the cluster is up and that --kubeconfig/--context point "
                                  "at it")
    return ExitCode.CLUSTER, f"{what}: the apiserver{where} answered {error.status}: {message}"


@contextlib.contextmanager
def translated(what: str, target: Target | None = None) -> Iterator[None]:
    """Run Client calls; their typed errors leave as CliErrors (`cli_error`)."""
    try:
        yield
    except KubeError as exc:
        raise cli_error(exc, what, target) from exc


# -- the API -----------------------------------------------------------------------------------------------------
class OcrJobApi:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.client = Client(target.configuration)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    def require_crd(self) -> None:
        """Discovery of ocrjob.dev/v1alpha1: its plain 404 when the CRD is not installed (ApiNotInstalled)
        becomes the install hint."""
        with translated("looking up the OcrJob API", self.target):
            self.client.require_crd()

    def get_job(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or self.namespace
        with translated(f"reading ocrjob {ns}/{name}", self.target):
            return self.client.get_job(ns, name)

    def find_job(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The job, or None when it does not exist (any other error still raises)."""
        try:
            return self.get_job(name, namespace)
        except CliError as exc:
            if isinstance(exc.cause, NotFound):
                return None
            raise

    def list_jobs(self, all_namespaces: bool = False, selector: str | None = None) -> list[dict[str, Any]]:
        where = "all namespaces" if all_namespaces else f"namespace {self.namespace}"
        with translated(f"listing ocrjobs in {where}", self.target):
            return self.client.list_jobs(None if all_namespaces else self.namespace, selector)

    def create_job(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        ns = body["metadata"].get("namespace") or self.namespace
        name = body["metadata"].get("name") or f"{body['metadata'].get('generateName', '')}<random>"
        with translated(f"creating ocrjob {ns}/{name}", self.target):
            return self.client.create_job(ns, body, dry_run=dry_run)

    def patch_job(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        with translated(f"updating ocrjob {self.namespace}/{name}", self.target):
            return self.client.patch_job(self.namespace, name, patch)

    def delete_job(self, name: str) -> None:
        # Background propagation: the operator's finalizer stops the pods; the garbage collector removes them.
        with translated(f"deleting ocrjob {self.namespace}/{name}", self.target):
            self.client.delete_job(self.namespace, name, propagation_policy="Background")

    def secret_keys(self, name: str) -> set[str] | None:
        """The data keys of a Secret (never its values): None when it does not exist."""
        try:
            with translated(f"reading Secret {self.namespace}/{name}", self.target):
                return self.client.secret_keys(self.namespace, name)
        except CliError as exc:
            if isinstance(exc.cause, NotFound):
                return None
            raise

    def events(self, uid: str) -> list[dict[str, Any]]:
        with translated("listing events", self.target):
            return self.client.list_events(self.namespace, f"involvedObject.uid={uid}")

    def pod_warnings(self) -> list[dict[str, Any]]:
        """Warning events of pods in the namespace (e.g. FailedScheduling): the caller filters by pod name."""
        with translated("listing pod events", self.target):
            return self.client.list_events(self.namespace, "involvedObject.kind=Pod,type=Warning")

    def job_pods(self, name: str) -> list[dict[str, Any]]:
        with translated(f"listing the pods of ocrjob {self.namespace}/{name}", self.target):
            return self.client.list_pods(self.namespace, f"{LABEL_JOB}={name}")

    def pod_log(self, pod: str, container: str, tail: int | None = None, timestamps: bool = False,
                since_seconds: int | None = None, follow: bool = False, read_timeout: float = 30) -> Any:
        """The raw response (read `.data`, or `.stream()` when following)."""
        with translated(f"reading the log of pod {self.namespace}/{pod}", self.target):
            return self.client.pod_log(self.namespace, pod, container, tail=tail, timestamps=timestamps,
                                       since_seconds=since_seconds, follow=follow, read_timeout=read_timeout)
