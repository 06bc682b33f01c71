"""Cluster access for the `ocrjob` cluster commands.

`connect()` resolves the cluster the way kubectl does: `--kubeconfig`, else `$KUBECONFIG` (several files
merged), else ~/.kube/config; `--context` or the current context; `-n`, else the context's namespace, else
`default`; in-cluster ServiceAccount config when no kubeconfig exists and the process runs in a pod.
`OcrJobApi` is the small surface the commands use (raw JSON dicts in and out, every request with a timeout);
every Kubernetes error becomes a `CliError` that says what went wrong and how to fix it (`api_error`, pure).
`kubernetes` is imported inside functions: `ocrjob run` must not pay for it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_operator.api.names import CRD_NAME, GROUP, LABEL_JOB, PLURAL, VERSION

TIMEOUT = (5, 30)  # connect, read seconds: every request is bounded
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CRD_INSTALL = (f"the OcrJob CRD ({CRD_NAME}) is not installed in this cluster: install it with "
               "`kubectl apply -k crds/` (or `kubectl apply -k manifests/` for the CRD and the operator)")


@dataclass
class Target:
    """Where the commands go: a client configuration, the namespace to use, and names for messages."""

    configuration: Any  # kubernetes.client.Configuration
    namespace: str
    context: str | None  # None: in-cluster
    server: str

    def describe(self) -> str:
        return f"context {self.context!r} ({self.server})" if self.context else f"in-cluster config ({self.server})"


def kubeconfig_paths(explicit: str | None, env: Mapping[str, str]) -> list[str]:
    if explicit:
        return [os.path.expanduser(explicit)]
    if env.get("KUBECONFIG"):
        return [os.path.expanduser(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
    return [os.path.expanduser("~/.kube/config")]


def connect(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
            env: Mapping[str, str] | None = None) -> Target:
    try:
        import kubernetes
        from kubernetes.config.config_exception import ConfigException
    except ImportError as exc:
        raise CliError(ExitCode.USAGE, f"the cluster commands need the kubernetes client ({exc}); install "
                                       "`ocrjob[cli]`") from exc

    from ocrjob_operator.kube import mirror_bearer_token

    env = os.environ if env is None else env
    configuration = kubernetes.client.Configuration()
    paths = kubeconfig_paths(kubeconfig, env)
    existing = [p for p in paths if os.path.exists(p)]
    if kubeconfig and not existing:
        raise CliError(ExitCode.USAGE, f"--kubeconfig {kubeconfig}: no such file")
    if not existing:
        if not env.get("KUBERNETES_SERVICE_HOST") or context:
            raise CliError(ExitCode.CLUSTER, f"no kubeconfig found (looked at {', '.join(paths)}): pass --kubeconfig, "
                                             "set KUBECONFIG, or run inside a pod with a ServiceAccount")
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise CliError(ExitCode.CLUSTER, f"in-cluster configuration failed: {exc}") from exc
        mirror_bearer_token(configuration)
        ns = namespace or _read(SA_DIR / "namespace") or "default"
        return Target(configuration, ns, None, configuration.host)
    joined = os.pathsep.join(existing)
    contexts, current = read_contexts(existing)
    if context and context not in contexts:
        names = ", ".join(sorted(contexts)) or "none"
        raise CliError(ExitCode.USAGE, f"--context {context}: no such context in {joined} (contexts: {names})")
    if not context and current not in contexts:
        names = ", ".join(sorted(contexts)) or "none"
        raise CliError(ExitCode.CLUSTER, f"the current-context {current!r} of {joined} names no context (contexts: "
                                         f"{names}): pass --context or fix the kubeconfig")
    context = context or current
    try:
        kubernetes.config.load_kube_config(config_file=joined, context=context, client_configuration=configuration,
                                           persist_config=False)
    except ConfigException as exc:
        raise CliError(ExitCode.CLUSTER, f"the kubeconfig {joined} is not usable: {exc}") from exc
    mirror_bearer_token(configuration)  # kubernetes 36.0.0 would send no token (kubernetes-client/python#2582)
    ns = namespace or contexts[context].get("namespace") or "default"
    return Target(configuration, ns, context, configuration.host)


def read_contexts(paths: list[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Contexts by name and the current-context, merged as kubectl merges: the first file to set a name wins.
    (The client's own merger lets the last current-context win, and cannot list contexts when it is wrong.)"""
    import yaml

    contexts: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(ExitCode.CLUSTER, f"the kubeconfig {path} is not readable: {exc}") from exc
        if not isinstance(doc, dict):
            raise CliError(ExitCode.CLUSTER, f"the kubeconfig {path} is not a kubeconfig (no mapping)")
        current = current or doc.get("current-context") or None
        for entry in doc.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") and entry["name"] not in contexts:
                contexts[entry["name"]] = entry.get("context") or {}
    return contexts, current


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


# -- errors ------------------------------------------------------------------------------------------------------
def _status_body(body: Any) -> dict[str, Any] | None:
    """The apiserver's Status object, or None when the body is not one (e.g. '404 page not found')."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        doc = json.loads(body or "")
    except (TypeError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == "Status" else None


def rejection_lines(status: dict[str, Any]) -> list[str]:
    """The apiserver's validation causes, verbatim (field: message), or its message when it gives none."""
    causes = (status.get("details") or {}).get("causes") or []
    lines = [f"{c['field']}: {c.get('message', '')}" if c.get("field") else c.get("message", "") for c in causes]
    return [line for line in lines if line] or [status.get("message") or "(no message)"]


def api_error(status: int, body: Any, what: str, target: Target | None = None) -> CliError:
    """Turn an apiserver error answer into a CliError for a person. `what` says what was attempted."""
    doc = _status_body(body)
    message = (doc or {}).get("message") or (body.decode(errors="replace") if isinstance(body, bytes) else
                                             str(body or "")).strip()
    where = f" at {target.describe()}" if target else ""
    if status == 401:
        return CliError(ExitCode.CLUSTER, f"{what}: the apiserver{where} refused the credentials (401 Unauthorized): "
                                          "refresh them (log in again) or choose another --context")
    if status == 403:
        return CliError(ExitCode.CLUSTER, f"{what}: forbidden: {message}; ask a cluster admin for the RBAC "
                                          "permission, or use another --context / -n")
    if status == 404 and doc is None:
        return CliError(ExitCode.CLUSTER, f"{what}: {CRD_INSTALL}")
    if status == 404:
        kind = ((doc or {}).get("details") or {}).get("kind")
        if kind == "namespaces":
            return CliError(ExitCode.NOT_FOUND, f"{what}: {message}: create the namespace or pass another -n")
        return CliError(ExitCode.NOT_FOUND, f"{what}: {message}")
    if status == 409:
        return CliError(ExitCode.REJECTED, f"{what}: {message}")
    if status == 422 or status == 400:
        lines = rejection_lines(doc) if doc else [message]
        return CliError(ExitCode.REJECTED, f"{what}: the apiserver rejected it:\n" + "\n".join(f"  {x}" for x in lines))
    if status == 0:
        return CliError(ExitCode.CLUSTER, f"{what}: cannot reach the apiserver{where}: {message}", transient=True)
    return CliError(ExitCode.CLUSTER, f"{what}: the apiserver{where} answered {status}: {message}",
                    transient=status >= 500 or status == 429)


@contextlib.contextmanager
def translated(what: str, target: Target | None = None) -> Iterator[None]:
    """Run Kubernetes calls; errors leave as CliError (apiserver answers) or CLUSTER (no answer at all)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as exc:
        raise api_error(exc.status or 0, exc.body or exc.reason, what, target) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        where = target.describe() if target else "the apiserver"
        reason = getattr(exc, "reason", None) or exc
        raise CliError(ExitCode.CLUSTER, f"{what}: cannot reach {where}: {reason}; check that the cluster is up and "
                                         "that --kubeconfig/--context point at it", transient=True) from exc


# -- the API -----------------------------------------------------------------------------------------------------
class OcrJobApi:
    def __init__(self, target: Target) -> None:
        import kubernetes

        self.target = target
        self.client = kubernetes.client.ApiClient(target.configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    def _json(self, resp: Any) -> Any:
        return json.loads(resp.data)

    def require_crd(self) -> None:
        """Discovery (readable by every authenticated user) of ocrjob.dev/v1alpha1: its plain 404 when the CRD is
        not installed becomes the install hint (api_error)."""
        with translated("looking up the OcrJob API", self.target):
            self.client.call_api(f"/apis/{GROUP}/{VERSION}", "GET", auth_settings=["BearerToken"],
                                 _preload_content=False, _request_timeout=TIMEOUT)

    def get_job(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or self.namespace
        with translated(f"reading ocrjob {ns}/{name}", self.target):
            return self._json(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name, _preload_content=False, _request_timeout=TIMEOUT))

    def find_job(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The job, or None when it does not exist (any other error still raises)."""
        try:
            return self.get_job(name, namespace)
        except CliError as exc:
            if exc.code is ExitCode.NOT_FOUND:
                return None
            raise

    def list_jobs(self, all_namespaces: bool = False, selector: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": TIMEOUT}
        if selector:
            kwargs["label_selector"] = selector
        where = "all namespaces" if all_namespaces else f"namespace {self.namespace}"
        with translated(f"listing ocrjobs in {where}", self.target):
            if all_namespaces:
                resp = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
            else:
                resp = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, **kwargs)
        return self._json(resp).get("items", [])

    def create_job(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        ns = body["metadata"].get("namespace") or self.namespace
        name = body["metadata"].get("name") or f"{body['metadata'].get('generateName', '')}<random>"
        kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        with translated(f"creating ocrjob {ns}/{name}", self.target):
            return self._json(self.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, body, _preload_content=False, _request_timeout=TIMEOUT, **kwargs))

    def patch_job(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        with translated(f"updating ocrjob {self.namespace}/{name}", self.target):
            return self._json(self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, patch, _content_type="application/merge-patch+json",
                _preload_content=False, _request_timeout=TIMEOUT))

    def delete_job(self, name: str) -> None:
        # Background propagation: the operator's finalizer stops the pods; the garbage collector removes them.
        with translated(f"deleting ocrjob {self.namespace}/{name}", self.target):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                        propagation_policy="Background", _request_timeout=TIMEOUT)

    def secret_keys(self, name: str) -> set[str] | None:
        """The data keys of a Secret (never its values): None when it does not exist."""
        try:
            with translated(f"reading Secret {self.namespace}/{name}", self.target):
                doc = self._json(self.core.read_namespaced_secret(name, self.namespace, _preload_content=False,
                                                                  _request_timeout=TIMEOUT))
        except CliError as exc:
            if exc.code is ExitCode.NOT_FOUND:
                return None
            raise
        return set(doc.get("data") or {}) | set(doc.get("stringData") or {})

    def events(self, uid: str) -> list[dict[str, Any]]:
        with translated("listing events", self.target):
            return self._json(self.core.list_namespaced_event(
                self.namespace, field_selector=f"involvedObject.uid={uid}", _preload_content=False,
                _request_timeout=TIMEOUT)).get("items", [])

    def pod_warnings(self) -> list[dict[str, Any]]:
        """Warning events of pods in the namespace (e.g. FailedScheduling): the caller filters by pod name."""
        with translated("listing pod events", self.target):
            return self._json(self.core.list_namespaced_event(
                self.namespace, field_selector="involvedObject.kind=Pod,type=Warning", _preload_content=False,
                _request_timeout=TIMEOUT)).get("items", [])

    def job_pods(self, name: str) -> list[dict[str, Any]]:
        with translated(f"listing the pods of ocrjob {self.namespace}/{name}", self.target):
            return self._json(self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{LABEL_JOB}={name}", _preload_content=False,
                _request_timeout=TIMEOUT)).get("items", [])

    def pod_log(self, pod: str, container: str, tail: int | None = None, timestamps: bool = False,
                since_seconds: int | None = None, follow: bool = False, read_timeout: float = 30) -> Any:
        """The raw response (read `.data`, or `.stream()` when following). `_preload_content=False` also works
        around kubernetes 36.0.0 returning the repr of the bytes (kubernetes-client/python#2596)."""
        kwargs: dict[str, Any] = {"container": container, "timestamps": timestamps, "follow": follow,
                                  "_preload_content": False, "_request_timeout": (TIMEOUT[0], read_timeout)}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        with translated(f"reading the log of pod {self.namespace}/{pod}", self.target):
            return self.core.read_namespaced_pod_log(pod, self.namespace, **kwargs)
