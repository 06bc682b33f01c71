"""Helpers for the operator's end-to-end tests: install from manifests/, grant the operator (which runs in-cluster
from its image under its ServiceAccount: tests/support/operator_deploy.py) one namespace, watch pods, build
OcrJobs, upload documents. Requests go through the operator's and the CLI's own `Client`; only the pod watch uses
the kubernetes client directly (the Client has no watch)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from ocrjob_operator.api import rbac
from ocrjob_operator.api.client import Client, KubeError, NotFound
from ocrjob_operator.api.names import GROUP, LABEL_JOB, OPERATOR_NAMESPACE, PLURAL, VERSION
from tests.support.controlplane import venv_tool
from tests.support.pki import write_kubeconfig
from tests.support.procs import wait_until

REPO = Path(__file__).resolve().parents[2]
OPERATOR_SA = rbac.OPERATOR_SERVICE_ACCOUNT


def kubectl(kubeconfig: Path, *args: str, timeout: float = 60, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([venv_tool("kubectl"), "--kubeconfig", str(kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def install(admin_kubeconfig: Path) -> None:
    """Apply the CRD, the operator's identity (namespace, ServiceAccount), the user role and the admission
    policies for real, then every manifest of the kustomization (the Deployment and the cluster-wide RBAC
    included) with a server-side dry run. The operator gets namespaced RBAC per test namespace
    (`grant_operator`), as a namespaced install does."""
    kubectl(admin_kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / "ocrjob.yaml"))
    kubectl(admin_kubeconfig, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
    for name in ("namespace.yaml", "serviceaccount.yaml", "user-role.yaml", "admission.yaml",
                 "leader-election.yaml"):
        kubectl(admin_kubeconfig, "apply", "--server-side", "--force-conflicts", "-f",
                str(REPO / "manifests" / name))
    kubectl(admin_kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-",
            stdin=rbac.render([rbac.secrets_role()], "# the role a namespace binds to grant its Secrets"))
    kubectl(admin_kubeconfig, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k",
            str(REPO / "manifests"))


def grant_operator(admin_kubeconfig: Path, namespace: str, secrets: bool = True) -> None:
    """The operator's Role and RoleBinding in `namespace`, as `python -m ocrjob_operator.api.rbac -n NS` makes
    (without the Secrets rule: a namespace that did not grant them)."""
    docs = rbac.render(rbac.namespaced([namespace], secrets=secrets), "# test namespace")
    kubectl(admin_kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=docs)


def operator_kubeconfig(client: Client, admin_kubeconfig: Path, dest: Path) -> Path:
    """A kubeconfig with a token of the operator's ServiceAccount (TokenRequest), like its pod would get."""
    token = client.service_account_token(OPERATOR_NAMESPACE, OPERATOR_SA, 6 * 3600)
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    return write_kubeconfig(dest, server=cluster["server"], ca=Path(cluster["certificate-authority"]),
                            user=rbac.OPERATOR_USER, token=token)


@dataclass
class PodRecorder:
    """Watches the pods of one namespace from a thread: every pod ever created, and the most that were
    active (created, not finished, not deleted) at the same time per job."""

    api_factory: Any
    namespace: str
    created: list[str] = field(default_factory=list)
    max_active: dict[str, int] = field(default_factory=dict)
    _active: dict[str, set[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)

    def start(self) -> PodRecorder:
        self._thread = threading.Thread(target=self._run, name=f"pods-{self.namespace}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        core = kubernetes.client.CoreV1Api(self.api_factory())
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:  # list, then watch from the list's revision: nothing is missed between the two
                    listed = core.list_namespaced_pod(self.namespace, _request_timeout=30)
                    for pod in listed.items:
                        self._record("ADDED", pod)
                    rv = listed.metadata.resource_version
                w = kubernetes.watch.Watch()
                for ev in w.stream(core.list_namespaced_pod, self.namespace, resource_version=rv, timeout_seconds=5,
                                   _request_timeout=30):
                    pod = ev["object"]
                    rv = pod.metadata.resource_version
                    self._record(ev["type"], pod)
                    if self._stop.is_set():
                        w.stop()
            except ApiException as exc:
                if exc.status == 410:
                    rv = None
                else:
                    self.errors.append(str(exc))
                    time.sleep(0.5)
            except Exception as exc:  # connection hiccups: keep watching
                self.errors.append(repr(exc))
                time.sleep(0.5)

    def _record(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        job = (pod.metadata.labels or {}).get(LABEL_JOB, "")
        active = self._active.setdefault(job, set())
        if kind == "ADDED" and name not in self.created:
            self.created.append(name)
        if kind == "DELETED" or (pod.status and pod.status.phase in ("Succeeded", "Failed")):
            active.discard(name)
        elif kind in ("ADDED", "MODIFIED"):
            active.add(name)
        self.max_active[job] = max(self.max_active.get(job, 0), len(active))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)


def ocrjob(name: str, namespace: str, bucket: str, endpoint: str, image: str = "ocrjob/inference:test",
           **spec: Any) -> dict[str, Any]:
    """An OcrJob of one small CPU shard; `image` is one the node has (never pulled: there is no registry)."""
    body = {
        "input": {"uri": f"s3://{bucket}/in"},
        "output": {"uri": f"s3://{bucket}/out"},
        "s3": {"endpoint": endpoint, "region": "us-east-1", "credentialsSecret": {"name": "s3-credentials"}},
        "image": image,
        "imagePullPolicy": "Never",
        "device": "cpu",
        "sharding": {"shardCount": 1},
        "parallelism": 1,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "ocr": {"detLimitSideLen": 640},
        "retries": {"perShard": 1, "backoffSeconds": 1},
        **spec,
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OcrJob", "metadata": {"name": name, "namespace": namespace},
            "spec": body}


class Jobs:
    """OcrJob CRUD for tests (cluster-admin: the test plays the user)."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.create_job(self.namespace, body)

    def get(self, name: str) -> dict[str, Any]:
        return self.client.get_job(self.namespace, name)

    def listed(self) -> list[dict[str, Any]]:
        return self.client.list_jobs(self.namespace)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except NotFound:
            return False
        return True

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.client.patch_job(self.namespace, name, patch)

    def patch_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.client.patch_job_status(self.namespace, name, status)

    def delete(self, name: str) -> None:
        with contextlib.suppress(KubeError):
            self.client.delete_job(self.namespace, name)

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def wait_status(self, name: str, check: Any, timeout: float, what: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.status(name)
            return status if check(status) else None

        return wait_until(probe, timeout=timeout, interval=0.5, what=f"{name}: {what}",
                          on_timeout=lambda: f"status: {self.status(name)}")

    def events(self, name: str) -> list[tuple[str, str]]:
        items = self.client.list_events(self.namespace, f"involvedObject.name={name}")
        # In the order they were written: creationTimestamp has 1-second resolution and ties come back in name
        # order; the resourceVersion (etcd's revision here) orders every write. The operator never updates
        # an event, so it is the creation order.
        return [(e.get("reason"), e.get("message")) for e in
                sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))]

    def pods(self, name: str) -> list[dict[str, Any]]:
        return self.client.list_pods(self.namespace, f"{LABEL_JOB}={name}")

    def create_secret(self, access_key: str, secret_key: str, name: str = "s3-credentials") -> None:
        self.client.create_secret(self.namespace, {"metadata": {"name": name}, "stringData": {
            "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}})


def upload_dir(s3: Any, bucket: str, prefix: str, folder: Path) -> list[str]:
    keys = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            s3.upload_file(str(path), bucket, key)
            keys.append(key)
    return keys
