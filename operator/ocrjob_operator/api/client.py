"""One Kubernetes client for the operator, the CLI and the tests, with one error policy.

- Configuration: `load_config()` resolves a cluster as kubectl does (the CLI and the tests); `configure()` is the
  operator's (in-cluster in a pod, else the default kubeconfig). Both mirror the bearer token
  (kubernetes-client/python#2582). Problems raise `ConfigError` with a message that says how to fix them.
- Errors: every failed request leaves as a `KubeError` subclass, classified once by `kube_error()`; callers
  decide on the type, never on message text.
- `Client`: raw JSON dicts in and out, every request bounded by TIMEOUT, safe to share between threads (one
  `kubernetes.client.ApiClient` per thread: that client is not thread-safe).

`kubernetes` is imported inside functions: the CLI's `ocrjob run` must not pay for it, and the CLI maps these
errors without it installed. Never imports the CLI or the OCR stack.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocrjob_operator.api.names import GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    import kubernetes

TIMEOUT = (5, 30)  # connect, read seconds: every request is bounded
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"  # what the client sends for a dict pod patch


# -- configuration -----------------------------------------------------------------------------------------------
class ConfigError(Exception):
    """The cluster configuration cannot be loaded: the message says what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadArgument(ConfigError):
    """The kubeconfig file or context the caller named does not exist (the caller's mistake, not the
    environment's)."""


@dataclass
class Target:
    """Where requests go: a client configuration, the namespace to use, and names for messages."""

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


def load_config(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
                env: Mapping[str, str] | None = None) -> Target:
    """Resolve the cluster as kubectl does: `kubeconfig`, else $KUBECONFIG (several files merged), else
    ~/.kube/config; `context` or the current context; `namespace`, else the context's, else `default`; the
    in-cluster ServiceAccount config when no kubeconfig exists and the process runs in a pod.
    Raises ImportError without the kubernetes client."""
    import kubernetes
    from kubernetes.config.config_exception import ConfigException

    env = os.environ if env is None else env
    configuration = kubernetes.client.Configuration()
    paths = kubeconfig_paths(kubeconfig, env)
    existing = [p for p in paths if os.path.exists(p)]
    if kubeconfig and not existing:
        raise BadArgument(f"--kubeconfig {kubeconfig}: no such file")
    if not existing:
        if not env.get("KUBERNETES_SERVICE_HOST") or context:
            raise ConfigError(f"no kubeconfig found (looked at {', '.join(paths)}): pass --kubeconfig, set KUBECONFIG, "
                              "or run inside a pod with a ServiceAccount")
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(f"in-cluster configuration failed: {exc}") from exc
        mirror_bearer_token(configuration)
        ns = namespace or _read(SA_DIR / "namespace") or "default"
        return Target(configuration, ns, None, configuration.host)
    joined = os.pathsep.join(existing)
    contexts, current = read_contexts(existing)
    if context and context not in contexts:
        names = ", ".join(sorted(contexts)) or "none"
        raise BadArgument(f"--context {context}: no such context in {joined} (contexts: {names})")
    if not context and current not in contexts:
        names = ", ".join(sorted(contexts)) or "none"
        raise ConfigError(f"the current-context {current!r} of {joined} names no context (contexts: {names}): pass "
                          "--context or fix the kubeconfig")
    context = context or current
    try:
        kubernetes.config.load_kube_config(config_file=joined, context=context, client_configuration=configuration,
                                           persist_config=False)
    except ConfigException as exc:
        raise ConfigError(f"the kubeconfig {joined} is not usable: {exc}") from exc
    mirror_bearer_token(configuration)
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
            raise ConfigError(f"the kubeconfig {path} is not readable: {exc}") from exc
        if not isinstance(doc, dict):
            raise ConfigError(f"the kubeconfig {path} is not a kubeconfig (no mapping)")
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


_configured = threading.Lock()
_operator_config: kubernetes.client.Configuration | None = None


def configure() -> kubernetes.client.Configuration:
    """The operator's configuration: in-cluster when running in a pod, else KUBECONFIG / ~/.kube/config (as
    kopf does). Loaded once per process.

    Kept in our own Configuration object, not the client's global default: kopf's login loads the
    kubeconfig again and replaces the global one."""
    import kubernetes
    from kubernetes.config.config_exception import ConfigException

    global _operator_config
    with _configured:
        if _operator_config is None:
            config = kubernetes.client.Configuration()
            try:
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    kubernetes.config.load_incluster_config(client_configuration=config)
                else:
                    kubernetes.config.load_kube_config(client_configuration=config)
            except ConfigException as exc:
                raise ConfigError(f"cannot configure the Kubernetes client: {exc}") from exc
            mirror_bearer_token(config)
            _operator_config = config
        return _operator_config


def mirror_bearer_token(config: kubernetes.client.Configuration) -> None:
    """kubernetes==36.0.0 sends no token at all (kubernetes-client/python#2582: the config loaders fill
    api_key['authorization'], auth_settings() reads api_key['BearerToken']), so every ServiceAccount
    request would be anonymous. Mirror the key, also after each refresh of a rotating in-cluster token."""
    if "authorization" not in config.api_key:
        return
    previous = config.refresh_api_key_hook

    def refresh(cfg: kubernetes.client.Configuration) -> None:
        if previous is not None:
            previous(cfg)
        if "authorization" in cfg.api_key:
            cfg.api_key["BearerToken"] = cfg.api_key["authorization"]

    config.refresh_api_key_hook = refresh
    config.api_key["BearerToken"] = config.api_key["authorization"]


# -- errors ------------------------------------------------------------------------------------------------------
class KubeError(Exception):
    """A request failed. `status`: the HTTP status (0: no answer at all); `message`: the apiserver's Status
    message, else the body, else what went wrong; `reason`: the HTTP reason phrase (or, without an answer, the
    cause); `causes`: the Status causes as `field: message` lines."""

    def __init__(self, status: int, message: str, reason: str = "", causes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.causes = causes


class Unauthorized(KubeError):
    """401: the credentials were refused."""


class Forbidden(KubeError):
    """403: RBAC (or an admission plugin) refused the request."""


class QuotaExceeded(Forbidden):
    """403 from ResourceQuota admission: the request is fine, the namespace is full for now."""


class NotFound(KubeError):
    """404 with a Status body: the object (or its namespace, `kind` 'namespaces') does not exist."""

    def __init__(self, status: int, message: str, reason: str = "", causes: tuple[str, ...] = (),
                 kind: str | None = None) -> None:
        super().__init__(status, message, reason, causes)
        self.kind = kind


class ApiNotInstalled(KubeError):
    """404 without a Status body ('404 page not found'): the API itself is not served, i.e. the CRD is not
    installed."""


class Conflict(KubeError):
    """409: already exists, or a precondition (uid, resourceVersion) no longer holds."""


class Invalid(KubeError):
    """400/422: the apiserver rejected the object; `causes` lists the fields."""


class Unavailable(KubeError):
    """Transient: no answer at all (status 0), a 5xx, or 429 Too Many Requests. Worth retrying."""


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


def answer_error(status: int, body: Any, reason: str = "") -> KubeError:
    """Classify an apiserver answer (HTTP status and body) into the KubeError it stands for."""
    doc = _status_body(body)
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    message = ((doc or {}).get("message") or text).strip() or reason
    if status == 401:
        return Unauthorized(status, message, reason)
    if status == 403:
        # ResourceQuota admission answers a plain 403 Forbidden whose only mark is this phrase in the message
        # (no Status reason or cause of its own), so it is read here, and nowhere else.
        if "exceeded quota" in message:
            return QuotaExceeded(status, message, reason)
        return Forbidden(status, message, reason)
    if status == 404 and doc is None:
        return ApiNotInstalled(status, message, reason)
    if status == 404:
        return NotFound(status, message, reason, kind=(doc.get("details") or {}).get("kind"))
    if status == 409:
        return Conflict(status, message, reason)
    if status in (400, 422):
        return Invalid(status, message, reason, tuple(rejection_lines(doc) if doc else [message]))
    if status == 0 or status >= 500 or status == 429:
        return Unavailable(status, message, reason)
    return KubeError(status, message, reason)


def kube_error(exc: BaseException) -> KubeError | None:
    """The KubeError for what the kubernetes client raised: an ApiException (an answer, or status 0 for a TLS
    failure), or a urllib3/OS error (no answer at all). None for anything else (a bug: let it surface)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        return answer_error(exc.status or 0, exc.body or exc.reason, str(exc.reason or ""))
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        cause = str(getattr(exc, "reason", None) or exc)
        return Unavailable(0, cause, cause)
    return None


# -- the client --------------------------------------------------------------------------------------------------
class Client:
    """OcrJobs, pods, Secrets, events, Leases and API discovery, as raw JSON dicts. Only KubeErrors leave a method."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.configuration = configuration
        self._local = threading.local()

    @property
    def _api(self) -> kubernetes.client.ApiClient:
        api = getattr(self._local, "api", None)
        if api is None:
            import kubernetes

            api = self._local.api = kubernetes.client.ApiClient(self.configuration)
        return api

    @property
    def _core(self) -> kubernetes.client.CoreV1Api:
        import kubernetes

        return kubernetes.client.CoreV1Api(self._api)

    @property
    def _coordination(self) -> kubernetes.client.CoordinationV1Api:
        import kubernetes

        return kubernetes.client.CoordinationV1Api(self._api)

    @property
    def _custom(self) -> kubernetes.client.CustomObjectsApi:
        import kubernetes

        return kubernetes.client.CustomObjectsApi(self._api)

    @staticmethod
    def _raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The raw response (`_preload_content=False`); every error leaves as a KubeError."""
        kwargs.setdefault("_request_timeout", TIMEOUT)
        try:
            return call(*args, _preload_content=False, **kwargs)
        except Exception as exc:
            error = kube_error(exc)
            if error is None:
                raise
            raise error from exc

    def _json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return json.loads(self._raw(call, *args, **kwargs).data)

    # -- API discovery ---------------------------------------------------------------------------------------
    def require_crd(self) -> None:
        """Discovery of ocrjob.dev/v1alpha1 (readable by every authenticated user): ApiNotInstalled when the CRD
        is not installed."""
        self._raw(self._api.call_api, f"/apis/{GROUP}/{VERSION}", "GET", auth_settings=["BearerToken"])

    # -- OcrJobs ---------------------------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        return self._json(self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)

    def list_jobs(self, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        """The OcrJobs of `namespace`, or of all namespaces when it is None."""
        kwargs: dict[str, Any] = {"label_selector": selector} if selector else {}
        if namespace is None:
            doc = self._json(self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs)
        else:
            doc = self._json(self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, **kwargs)
        return doc.get("items", [])

    def create_job(self, namespace: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return self._json(self._custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body,
                          **kwargs)

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the OcrJob (spec, metadata)."""
        return self._json(self._custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                          patch, _content_type=MERGE_PATCH)

    def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the status subresource: `status` holds the status fields."""
        return self._json(self._custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, PLURAL,
                          name, {"status": status}, _content_type=MERGE_PATCH)

    def delete_job(self, namespace: str, name: str, uid: str | None = None,
                   propagation_policy: str = "Background") -> None:
        """Delete the OcrJob; with `uid`, only that incarnation of the name (Conflict otherwise)."""
        kwargs: dict[str, Any] = {"body": {"preconditions": {"uid": uid}}} if uid else {}
        self._raw(self._custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                  propagation_policy=propagation_policy, **kwargs)

    # -- pods ------------------------------------------------------------------------------------------------
    def list_pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"label_selector": selector} if selector else {}
        return self._json(self._core.list_namespaced_pod, namespace, **kwargs).get("items", [])

    def create_pod(self, namespace: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return self._json(self._core.create_namespaced_pod, namespace, body, **kwargs)

    def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._json(self._core.patch_namespaced_pod, name, namespace, patch,
                          _content_type=STRATEGIC_MERGE_PATCH)

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        self._raw(self._core.delete_namespaced_pod, name, namespace, grace_period_seconds=grace_seconds)

    def pod_log(self, namespace: str, name: str, container: str | None = None, tail: int | None = None,
                timestamps: bool = False, since_seconds: int | None = None, follow: bool = False,
                read_timeout: float = TIMEOUT[1]) -> Any:
        """The raw response (read `.data`, or `.stream()` when following). `_preload_content=False` also works
        around kubernetes 36.0.0 returning the repr of the bytes (kubernetes-client/python#2596)."""
        kwargs: dict[str, Any] = {"timestamps": timestamps, "follow": follow}
        if container is not None:
            kwargs["container"] = container
        if tail is not None:
            kwargs["tail_lines"] = tail
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        return self._raw(self._core.read_namespaced_pod_log, name, namespace,
                         _request_timeout=(TIMEOUT[0], read_timeout), **kwargs)

    def pod_log_text(self, namespace: str, name: str, **kwargs: Any) -> str:
        """The whole log as text (see `pod_log` for the options)."""
        return self.pod_log(namespace, name, **kwargs).data.decode(errors="replace")

    # -- Secrets ---------------------------------------------------------------------------------------------
    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """The Secret's data, decoded."""
        data = self._json(self._core.read_namespaced_secret, name, namespace).get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def secret_keys(self, namespace: str, name: str) -> set[str]:
        """The data keys of a Secret (never its values)."""
        doc = self._json(self._core.read_namespaced_secret, name, namespace)
        return set(doc.get("data") or {}) | set(doc.get("stringData") or {})

    def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(self._core.create_namespaced_secret, namespace, body)

    # -- events and tokens -----------------------------------------------------------------------------------
    def list_events(self, namespace: str, field_selector: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"field_selector": field_selector} if field_selector else {}
        return self._json(self._core.list_namespaced_event, namespace, **kwargs).get("items", [])

    def service_account_token(self, namespace: str, name: str, seconds: int) -> str:
        """A TokenRequest for the ServiceAccount: a bearer token valid for `seconds`."""
        doc = self._json(self._core.create_namespaced_service_account_token, name, namespace,
                         {"spec": {"expirationSeconds": seconds}})
        return doc["status"]["token"]


    # -- Leases (leader election) ----------------------------------------------------------------------------
    # `timeout` (connect, read seconds): the elector bounds each request by what is left of its renew deadline.
    def get_lease(self, namespace: str, name: str, timeout: tuple[float, float] = TIMEOUT) -> dict[str, Any]:
        return self._json(self._coordination.read_namespaced_lease, name, namespace, _request_timeout=timeout)

    def create_lease(self, namespace: str, body: dict[str, Any],
                     timeout: tuple[float, float] = TIMEOUT) -> dict[str, Any]:
        """Conflict when the Lease already exists (somebody else created it first)."""
        return self._json(self._coordination.create_namespaced_lease, namespace, body, _request_timeout=timeout)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any],
                      timeout: tuple[float, float] = TIMEOUT) -> dict[str, Any]:
        """A full update; with `metadata.resourceVersion` in `body`, Conflict when the Lease changed since."""
        return self._json(self._coordination.replace_namespaced_lease, name, namespace, body,
                          _request_timeout=timeout)
