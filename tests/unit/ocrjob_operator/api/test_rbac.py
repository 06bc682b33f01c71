"""The operator's RBAC is generated from one rule table: the checked-in cluster-wide file is current, the
namespaced variant grants the same rules in the named namespaces only, and the admission policy names the
same ServiceAccount."""

from __future__ import annotations

from pathlib import Path

import yaml

from ocrjob_operator.api import rbac

REPO = Path(__file__).resolve().parents[4]


def test_checked_in_cluster_rbac_is_generated() -> None:
    on_disk = (REPO / "manifests" / "rbac.yaml").read_text()
    assert on_disk == rbac.render(rbac.cluster_wide(), rbac.CLUSTER_HEADER), (
        "manifests/rbac.yaml is stale: run `python -m ocrjob_operator.api.rbac > manifests/rbac.yaml`")


def test_namespaced_rbac_is_a_role_per_namespace_with_the_same_rules() -> None:
    docs = rbac.namespaced(["team-a", "team-b"])
    assert [(d["kind"], d["metadata"]["namespace"]) for d in docs] == [
        ("Role", "team-a"), ("RoleBinding", "team-a"), ("Role", "team-b"), ("RoleBinding", "team-b")]
    cluster_role = rbac.cluster_wide()[0]
    assert all(d["rules"] == cluster_role["rules"] for d in docs if d["kind"] == "Role")
    assert all(d["roleRef"]["kind"] == "Role" and d["subjects"][0]["name"] == rbac.OPERATOR_SERVICE_ACCOUNT
               for d in docs if d["kind"] == "RoleBinding")
    assert not any(d["kind"].startswith("Cluster") for d in docs)


def test_secrets_are_get_only_and_nothing_is_a_wildcard() -> None:
    rules = rbac.cluster_wide()[0]["rules"]
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert not any("*" in r["verbs"] or "*" in r["resources"] or "*" in r["apiGroups"] for r in rules)


def test_admission_policy_names_the_operator_service_account() -> None:
    docs = list(yaml.safe_load_all((REPO / "manifests" / "admission.yaml").read_text()))
    policy = next(d for d in docs if d["metadata"]["name"] == "ocrjob.dev-operator-creates-only-shard-pods")
    assert rbac.OPERATOR_USER in policy["spec"]["matchConditions"][0]["expression"]
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert {"admission.yaml", "rbac.yaml", "user-role.yaml"} <= set(kustomization["resources"])
