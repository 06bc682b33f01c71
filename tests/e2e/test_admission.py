"""Nobody gains rights through OcrJob, enforced by the real apiserver with manifests/admission.yaml and the
generated namespaced RBAC: a tenant may only name credentials she can read and must be allowed to create the
pods her job runs; the operator's own token can create nothing but shard pods and read no Secret outside
the namespaces it serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ocrjob_operator.api import rbac
from ocrjob_operator.api.client import Client, Forbidden, Invalid, KubeError, load_config
from ocrjob_operator.api.spec import parse_spec
from ocrjob_operator.podspec import JobRef, build_pod
from tests.support.operator_harness import Jobs, grant_operator, kubectl, ocrjob
from tests.support.procs import wait_until

pytestmark = [pytest.mark.cluster]


def _grant(admin: Path, namespace: str, user: str, rules: list[dict[str, Any]]) -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": user, "namespace": namespace}, "rules": rules}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": user, "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    kubectl(admin, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": [role, binding]}))


JOBS = {"apiGroups": ["ocrjob.dev"], "resources": ["ocrjobs"], "verbs": ["create", "get", "patch", "update"]}
PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}
SECRET = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s3-credentials"], "verbs": ["get"]}


def _as(admin: Path, user: str, *args: str, body: dict[str, Any] | None = None) -> Any:
    return kubectl(admin, f"--as={user}", *args, check=False, stdin=json.dumps(body) if body else None)


def test_a_tenant_can_only_name_credentials_she_may_read(installed: Path, k8s_client: Client,
                                                         namespace: str) -> None:
    Jobs(k8s_client, namespace).create_secret("AKIA-of-someone-else", "their-secret")
    _grant(installed, namespace, "mallory", [JOBS, PODS])  # may create jobs and pods, may not read Secrets
    _grant(installed, namespace, "alice", [JOBS, PODS, SECRET])
    _grant(installed, namespace, "nopods", [JOBS, SECRET])
    job = ocrjob("stolen", namespace, "bucket", "http://attacker.example:9000")
    wait_until(lambda: "yes" in _as(installed, "alice", "auth", "can-i", "get", "secret/s3-credentials", "-n",
                                    namespace).stdout, timeout=30, what="RBAC to take effect")

    refused = _as(installed, "mallory", "create", "-f", "-", body=job)
    assert refused.returncode != 0 and "mallory may not get" in refused.stderr, refused.stderr
    assert "an OcrJob may only name credentials its author can read" in refused.stderr
    assert _as(installed, "nopods", "create", "-f", "-", body=job).returncode != 0
    assert "nopods may not create pods" in _as(installed, "nopods", "create", "-f", "-", body=job).stderr

    accepted = _as(installed, "alice", "create", "-f", "-", body=job)
    assert accepted.returncode == 0, accepted.stderr
    # Mallory may still edit a job she may update (labels, suspend) but not point it at a Secret.
    plain = ocrjob("plain", namespace, "bucket", "http://s3.example:9000")
    del plain["spec"]["s3"]["credentialsSecret"]
    assert _as(installed, "mallory", "create", "-f", "-", body=plain).returncode == 0
    assert _as(installed, "mallory", "-n", namespace, "label", "ocrjob/stolen", "team=x").returncode == 0
    swap = _as(installed, "mallory", "-n", namespace, "patch", "ocrjob/plain", "--type=merge", "-p",
               json.dumps({"spec": {"s3": {"credentialsSecret": {"name": "s3-credentials"}}}}))
    assert swap.returncode != 0 and "mallory may not get" in swap.stderr


def _operator(op_kubeconfig: Path) -> Client:
    """A client with the operator's own ServiceAccount token, as its pod has."""
    return Client(load_config(kubeconfig=str(op_kubeconfig)).configuration)


def test_the_operator_token_creates_only_shard_pods_and_reads_no_secret_elsewhere(
        installed: Path, k8s_client: Client, namespace: str, op_kubeconfig: Path) -> None:
    grant_operator(installed, namespace)
    jobs = Jobs(k8s_client, namespace)
    job = jobs.create(ocrjob("shape", namespace, "bucket", "http://s3.example:9000", suspend=True))
    operator = _operator(op_kubeconfig)
    meta = job["metadata"]
    pod = build_pod(JobRef(meta["name"], namespace, meta["uid"]), parse_spec(job["spec"]), 0, 0,
                    "s3://bucket/out/_ocrjob/x/shards/00000.json")
    operator.create_pod(namespace, pod, dry_run=True)  # the builder's shape passes

    privileged = json.loads(json.dumps(pod))
    privileged["metadata"]["name"] = "escape"
    privileged["spec"].update(hostPID=True, hostNetwork=True, volumes=[{"name": "root", "hostPath": {"path": "/"}}])
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    privileged["spec"]["containers"][0]["volumeMounts"] = [{"name": "root", "mountPath": "/host"}]
    with pytest.raises((Invalid, Forbidden)) as refused:
        operator.create_pod(namespace, privileged)
    assert "ocrjob.dev-operator-creates-only-shard-pods" in refused.value.message

    unowned = json.loads(json.dumps(pod))
    unowned["metadata"]["name"] = "unowned"
    del unowned["metadata"]["ownerReferences"]
    with pytest.raises((Invalid, Forbidden)) as refused:
        operator.create_pod(namespace, unowned)
    assert "owned by an OcrJob" in refused.value.message

    for elsewhere in ("kube-system", "default"):
        with pytest.raises(Forbidden):
            operator.read_secret(elsewhere, "anything")
        moved = json.loads(json.dumps(pod))
        moved["metadata"]["namespace"] = elsewhere
        with pytest.raises(KubeError):
            operator.create_pod(elsewhere, moved, dry_run=True)
    assert rbac.OPERATOR_USER in kubectl(installed, "get", "validatingadmissionpolicy",
                                         "ocrjob.dev-operator-creates-only-shard-pods", "-o", "json").stdout
