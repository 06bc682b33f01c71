"""The operator as users deploy it, on the real node: its image, its ServiceAccount's in-cluster config, the
manifests' pod template (non-root, read-only root filesystem, probes), its liveness and metrics reached through
the apiserver's pod proxy (apiserver -> pod IP on the node).

    write_local_overlay(dir, image)   a kustomization over manifests/ that only swaps the image and pull policy
                                      (`kubectl apply -k dir` is what `make cluster-up` runs)
    OperatorPod(...)                  one operator instance for the end-to-end suites: the Deployment's pod
                                      template as a bare pod watching one namespace, so a test can kill it
                                      (SIGKILL through the node) and start another, as OperatorProcess did
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from ocrjob_operator.api.names import LEASE_NAME, OPERATOR_NAMESPACE
from tests.support.procs import wait_until

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OPERATOR_CONTAINER = "operator"
LIVENESS_PORT = 8080
METRICS_PORT = 9090
LABEL_WATCHES = "ocrjob.test/watches"  # which test namespace an operator pod serves
LABEL_INSTANCE = "ocrjob.test/operator"  # which OperatorPod (of several on one namespace) made it


def manifest_deployment() -> dict[str, Any]:
    """The operator Deployment exactly as manifests/deployment.yaml ships it."""
    return yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())


def shipped_image_name() -> str:
    """The image name the kustomization rewrites (its `images[0].name`): the one thing the overlay swaps."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    return str(kustomization["images"][0]["name"])


def split_ref(ref: str) -> tuple[str, str]:
    """`registry/name:tag` -> (`registry/name`, `tag`); a port in the registry host is not a tag."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def write_local_overlay(dest: Path, operator_image: str) -> Path:
    """A kustomization over manifests/ for a node without a registry: the locally built image, never pulled."""
    dest.mkdir(parents=True, exist_ok=True)
    name, tag = split_ref(operator_image)
    deployment = manifest_deployment()
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS, dest)],
        "images": [{"name": shipped_image_name(), "newName": name, "newTag": tag}],
        "patches": [{
            "target": {"kind": "Deployment", "name": deployment["metadata"]["name"]},
            "patch": yaml.safe_dump([{"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicy",
                                      "value": "Never"}]),
        }],
    }
    (dest / "kustomization.yaml").write_text("# Written by tests/support/operator_deploy.py: only the image and its "
                                             "pull policy differ from manifests/.\n" + yaml.safe_dump(overlay))
    return dest


def lease_name(namespace: str) -> str:
    """The Lease the operators of one test namespace elect their leader on (one per namespace: a test's operator
    never waits for an operator that an earlier test killed, in another namespace)."""
    return f"{LEASE_NAME}-{namespace}"


def operator_pod(name: str, namespace: str, image: str, args: tuple[str, ...], instance: str,
                 memory_limit: str | None = None) -> dict[str, Any]:
    """The Deployment's pod template, unchanged but for its name, image, pull policy and command line (one watched
    namespace and its own Lease), restartPolicy Never (a killed instance stays dead until a test starts one) and,
    when given, a lower memory limit (as an admin may set)."""
    template = copy.deepcopy(manifest_deployment()["spec"]["template"])
    spec = template["spec"]
    container = next(c for c in spec["containers"] if c["name"] == OPERATOR_CONTAINER)
    if memory_limit is not None:
        resources = container.setdefault("resources", {})
        resources.setdefault("limits", {})["memory"] = memory_limit
        resources.setdefault("requests", {})["memory"] = memory_limit
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    container["command"] = ["python", "-m", "ocrjob_operator", "--namespace", namespace,
                            "--lease-name", lease_name(namespace), *args]
    spec["restartPolicy"] = "Never"
    spec["terminationGracePeriodSeconds"] = 30
    metadata = template.get("metadata") or {}
    metadata["name"] = name
    metadata["namespace"] = OPERATOR_NAMESPACE
    metadata.setdefault("labels", {}).update({LABEL_WATCHES: namespace, LABEL_INSTANCE: instance})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


class OperatorPod:
    """One operator instance watching `namespace`, as a pod in the operator's namespace under its ServiceAccount.

    `start()` creates a new pod (`<name>-<n>`, so each start is a new leader identity, as a replaced pod is);
    `kill()` SIGKILLs its container through the node (no clean-up: a crash or an OOM kill); `stop()` deletes the
    pod (the kubelet's SIGTERM to PID 1, then kopf's clean shutdown). `log` holds every instance's log, followed
    from the kubelet while it runs; `exit_code` is the last instance's."""

    def __init__(self, api_factory: Callable[[], kubernetes.client.ApiClient], namespace: str, image: str,
                 workdir: Path, sigkill: Callable[[str, str, str], None], args: tuple[str, ...] = (),
                 name: str = "operator", memory_limit: str | None = None) -> None:
        self.api_factory, self.namespace, self.image, self.args = api_factory, namespace, image, tuple(args)
        self.memory_limit = memory_limit
        self.base_name = name
        self.sigkill_container = sigkill
        self.log = workdir / f"{name}.log"
        self.starts = 0
        self.pod_name = ""
        self.exit_code: int | None = None
        self._followers: list[threading.Thread] = []

    @property
    def name(self) -> str:
        """The current instance's leader identity prefix (POD_NAME, from the downward API)."""
        return self.pod_name

    def _core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api_factory())

    def start(self, timeout: float = 120) -> OperatorPod:
        """Create the next instance and wait for its liveness endpoint (a standby serves it too)."""
        self.starts += 1
        self.exit_code = None
        self.pod_name = f"{self.base_name}-{self.namespace}-{self.starts}"[-63:].lstrip("-")
        body = operator_pod(self.pod_name, self.namespace, self.image, self.args, self.base_name, self.memory_limit)
        core = self._core()
        core.create_namespaced_pod(OPERATOR_NAMESPACE, body)
        with open(self.log, "a") as log:
            log.write(f"\n===== operator start #{self.starts} (pod {OPERATOR_NAMESPACE}/{self.pod_name}) =====\n")
        wait_until(lambda: self._container_state() in ("running", "terminated"), timeout=timeout, interval=0.3,
                   what=f"operator pod {self.pod_name} to start", on_timeout=self._describe)
        self._follow(self.pod_name)
        wait_until(self._healthy, timeout=timeout, interval=0.3, what="the operator's liveness endpoint",
                   abort=lambda: (f"its container ended: {self._describe()}"
                                  if self._container_state() == "terminated" else None),
                   on_timeout=self._describe)
        return self

    def _pod(self) -> Any | None:
        try:
            return self._core().read_namespaced_pod(self.pod_name, OPERATOR_NAMESPACE, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _container_state(self) -> str | None:
        pod = self._pod()
        statuses = (pod.status.container_statuses or []) if pod is not None and pod.status else []
        for status in statuses:
            if status.name == OPERATOR_CONTAINER:
                if status.state.terminated is not None:
                    self.exit_code = status.state.terminated.exit_code
                    return "terminated"
                if status.state.running is not None:
                    return "running"
                return "waiting"
        return None

    def _describe(self) -> str:
        pod = self._pod()
        return "gone" if pod is None else str(pod.status)

    def _proxy(self, port: int, path: str) -> str:
        return self._core().connect_get_namespaced_pod_proxy_with_path(
            f"{self.pod_name}:{port}", OPERATOR_NAMESPACE, path, _request_timeout=5)

    def _healthy(self) -> bool:
        self._proxy(LIVENESS_PORT, "healthz")  # a 503 (unhealthy) raises
        return True

    def metrics(self) -> str:
        return str(self._proxy(METRICS_PORT, "metrics"))

    def _follow(self, pod_name: str) -> None:
        """Copy the container's log into `self.log` until it exits (the kubelet drops it with the pod)."""
        def follow() -> None:
            with contextlib.suppress(Exception):
                stream = self._core().read_namespaced_pod_log(pod_name, OPERATOR_NAMESPACE,
                                                              container=OPERATOR_CONTAINER, follow=True,
                                                              _preload_content=False)
                with open(self.log, "ab") as log:
                    for chunk in stream.stream(4096):
                        log.write(chunk)
                        log.flush()

        thread = threading.Thread(target=follow, name=f"log-{pod_name}", daemon=True)
        thread.start()
        self._followers.append(thread)

    def _wait_ended(self, timeout: float) -> None:
        wait_until(lambda: self._container_state() in ("terminated", None), timeout=timeout, interval=0.2,
                   what=f"operator pod {self.pod_name} to end")
        for thread in self._followers:
            thread.join(timeout=5)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, like a node crash or an OOM kill of the operator."""
        if self.running():
            self.sigkill_container(OPERATOR_NAMESPACE, self.pod_name, OPERATOR_CONTAINER)
            self._wait_ended(60)

    def stop(self, timeout: float = 60) -> None:
        """Delete the pod: SIGTERM from the kubelet, kopf shuts down, the Lease is released."""
        if not self.pod_name:
            return
        core = self._core()
        pod = self._pod()
        if pod is not None:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(self.pod_name, OPERATOR_NAMESPACE)
            self._watch_exit(core, pod.metadata.resource_version, timeout)
        for thread in self._followers:
            thread.join(timeout=5)
        # This instance and every earlier one (killed instances stay, Failed, until now); not another OperatorPod's.
        selector = f"{LABEL_WATCHES}={self.namespace},{LABEL_INSTANCE}={self.base_name}"
        for pod in core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=selector).items:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(pod.metadata.name, OPERATOR_NAMESPACE, grace_period_seconds=0)
        wait_until(lambda: not core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=selector).items,
                   timeout=timeout, what=f"the operator pods of {self.namespace} to be removed")

    def _watch_exit(self, core: kubernetes.client.CoreV1Api, since: str, timeout: float) -> None:
        """Follow the pod from `since` until it is gone: the exit code is in its status only between the
        container's exit and the pod's removal, which a poll can miss."""
        watch = kubernetes.watch.Watch()
        for event in watch.stream(core.list_namespaced_pod, OPERATOR_NAMESPACE, resource_version=since,
                                  field_selector=f"metadata.name={self.pod_name}", timeout_seconds=int(timeout)):
            for status in event["object"].status.container_statuses or []:
                if status.name == OPERATOR_CONTAINER and status.state.terminated is not None:
                    self.exit_code = status.state.terminated.exit_code
            if event["type"] == "DELETED":
                watch.stop()

    def running(self) -> bool:
        return bool(self.pod_name) and self._container_state() == "running"

    def wait_exited(self, timeout: float) -> int | None:
        """Wait for the current instance's container to end by itself; its exit code."""
        self._wait_ended(timeout)
        return self.exit_code


def deploy_operator(kubeconfig: Path, overlay: Path, kubectl: str, timeout: float = 300) -> None:
    """`kubectl apply -k overlay` (CRD, RBAC, admission policies, the Deployment), then wait for the rollout."""
    def run(*args: str) -> None:
        proc = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")

    run("apply", "--server-side", "--force-conflicts", "-k", str(overlay))
    deployment = manifest_deployment()["metadata"]
    run("-n", deployment["namespace"], "rollout", "status", f"deployment/{deployment['name']}",
        f"--timeout={int(timeout)}s")
