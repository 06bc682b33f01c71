"""Kubernetes I/O for the operator: one small surface over the `kubernetes` client, raw JSON dicts in and out.

Blocking calls: used from worker threads only (never directly inside the event loop). Each thread gets its
own ApiClient (the client is not thread-safe); every request has a timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from ocrjob_operator.api.names import ANNOTATION_KILL_MESSAGE, ANNOTATION_KILL_REASON, GROUP, PLURAL, VERSION
from ocrjob_operator.podspec import job_selector

log = logging.getLogger("ocrjob.kube")
TIMEOUT = (5, 30)  # connect, read seconds
_configured = threading.Lock()
_config: kubernetes.client.Configuration | None = None


def configure() -> kubernetes.client.Configuration:
    """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config (as kopf does).

    Kept in our own Configuration object, not the client's global default: kopf's login loads the
    kubeconfig again and replaces the global one."""
    global _config
    with _configured:
        if _config is None:
            config = kubernetes.client.Configuration()
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                kubernetes.config.load_incluster_config(client_configuration=config)
            else:
                kubernetes.config.load_kube_config(client_configuration=config)
            mirror_bearer_token(config)
            _config = config
        return _config


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


class Kube:
    def __init__(self) -> None:
        self._config = configure()
        self._local = threading.local()

    @property
    def _api(self) -> kubernetes.client.ApiClient:
        api = getattr(self._local, "api", None)
        if api is None:
            api = self._local.api = kubernetes.client.ApiClient(self._config)
        return api

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self._api)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self._api)

    # -- OcrJobs ---------------------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                           _preload_content=False, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def patch_job_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": patch},
            _content_type="application/merge-patch+json", _request_timeout=TIMEOUT)

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background",
                body={"preconditions": {"uid": uid}}, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- pods ------------------------------------------------------------------------------------------
    def list_job_pods(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(namespace, label_selector=job_selector(uid), _preload_content=False,
                                             _request_timeout=TIMEOUT)
        return json.loads(resp.data).get("items", [])

    def create_pod(self, pod: dict[str, Any]) -> bool:
        """Create the pod; False when it already exists (a deterministic name: the decision was made before)."""
        try:
            self.core.create_namespaced_pod(pod["metadata"]["namespace"], pod, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> bool:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds,
                                            _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def kill_pod(self, namespace: str, name: str, reason: str, message: str, deadline_seconds: int) -> None:
        """Stop a running pod but keep its object (the retry record): annotate why, then shorten its
        activeDeadlineSeconds so the kubelet stops it (SIGTERM, grace, SIGKILL) and marks it Failed."""
        patch = {"metadata": {"annotations": {ANNOTATION_KILL_REASON: reason, ANNOTATION_KILL_MESSAGE: message}},
                 "spec": {"activeDeadlineSeconds": max(1, deadline_seconds)}}
        try:
            self.core.patch_namespaced_pod(name, namespace, patch, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- Secrets (only the one an OcrJob names, in its own namespace) ------------------------------------
    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace, _preload_content=False,
                                                      _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = json.loads(secret.data).get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
