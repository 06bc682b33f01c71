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


def test_namespaced_rbac_is_a_role_per_namespace_with_the_same_rules_and_secrets() -> None:
    docs = rbac.namespaced(["team-a", "team-b"])
    assert [(d["kind"], d["metadata"]["namespace"]) for d in docs] == [
        ("Role", "team-a"), ("RoleBinding", "team-a"), ("Role", "team-b"), ("RoleBinding", "team-b")]
    cluster_role = rbac.cluster_wide()[0]
    assert all(d["rules"] == [*cluster_role["rules"], rbac.SECRETS_RULE.as_dict()] for d in docs if d["kind"] == "Role")
    assert all(d["roleRef"]["kind"] == "Role" and d["subjects"][0]["name"] == rbac.OPERATOR_SERVICE_ACCOUNT
               for d in docs if d["kind"] == "RoleBinding")
    assert not any(d["kind"].startswith("Cluster") for d in docs)


def test_the_cluster_wide_install_reads_secrets_only_where_a_namespace_grants_it() -> None:
    docs = rbac.cluster_wide()
    bound = {d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}
    assert bound == {rbac.OPERATOR_ROLE}  # the secrets role is bound by no ClusterRoleBinding
    for doc in docs:
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] in bound:
            assert not any("secrets" in r["resources"] for r in doc["rules"])
    secrets_role = next(d for d in docs if d["metadata"]["name"] == rbac.SECRETS_ROLE)
    assert secrets_role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    grant = rbac.grant_secrets("team-a")
    assert (grant["kind"], grant["metadata"]["namespace"], grant["roleRef"]) == (
        "RoleBinding", "team-a", {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": rbac.SECRETS_ROLE})
    command = rbac.grant_command("team-a")
    assert command.startswith("kubectl -n team-a create rolebinding ")
    assert f"--clusterrole={rbac.SECRETS_ROLE}" in command
    assert f"--serviceaccount={rbac.OPERATOR_USER.split(':', 2)[2]}" in command


def test_secrets_are_get_only_and_nothing_is_a_wildcard() -> None:
    rules = [r for d in rbac.cluster_wide() if d["kind"] == "ClusterRole" for r in d["rules"]]
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert not any("*" in r["verbs"] or "*" in r["resources"] or "*" in r["apiGroups"] for r in rules)


def test_admission_policy_names_the_operator_service_account() -> None:
    docs = list(yaml.safe_load_all((REPO / "manifests" / "admission.yaml").read_text()))
    policy = next(d for d in docs if d["metadata"]["name"] == "ocrjob.dev-operator-creates-only-shard-pods")
    assert rbac.OPERATOR_USER in policy["spec"]["matchConditions"][0]["expression"]
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert {"admission.yaml", "rbac.yaml", "user-role.yaml"} <= set(kustomization["resources"])


def test_the_readme_quotes_the_grant_command() -> None:
    readme = " ".join((REPO / "README.md").read_text().split())
    assert rbac.grant_command("NS") in readme
