"""The operator's RBAC, generated from one table of rules: per namespace (a Role and RoleBinding in each watched
namespace) or cluster-wide (only for `--all-namespaces`).

    python -m ocrjob_operator.api.rbac                                   # cluster-wide: manifests/rbac.yaml
    python -m ocrjob_operator.api.rbac --namespace team-a --namespace team-b   # namespaced install
    python -m ocrjob_operator.api.rbac --grant-secrets team-a             # let it read team-a's Secrets

Secrets are never granted cluster-wide: in the `--all-namespaces` install the operator reads the Secret a job
names only in namespaces that granted it (a RoleBinding to the `ocrjob-operator-secrets` ClusterRole, which a
namespace admin may create: `grant_command`), so a stolen operator token reads no Secret of a namespace that
never used OcrJob. A namespaced install grants it in each listed namespace.

A unit test keeps manifests/rbac.yaml equal to the cluster-wide output. What RBAC cannot express — which pods
the operator may create, and that a job's author must be allowed what the job names — the admission policies
in manifests/admission.yaml enforce.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import yaml

from ocrjob_operator.api.names import GROUP, OPERATOR_NAMESPACE, PLURAL

OPERATOR_SERVICE_ACCOUNT = "ocrjob-operator"
OPERATOR_ROLE = "ocrjob-operator"
SECRETS_ROLE = "ocrjob-operator-secrets"  # a ClusterRole bound per namespace (RoleBinding), never cluster-wide
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
_LABELS = {"app.kubernetes.io/name": "ocrjob", "app.kubernetes.io/component": "operator"}


@dataclass(frozen=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"apiGroups": list(self.api_groups), "resources": list(self.resources), "verbs": list(self.verbs)}


RULES: tuple[Rule, ...] = (
    Rule((GROUP,), (PLURAL,), ("get", "list", "watch", "patch", "delete"),
         "watch OcrJobs; patch them for kopf's finalizer and bookkeeping annotations; delete them after their TTL"),
    Rule((GROUP,), (f"{PLURAL}/status",), ("get", "patch"), "write the status"),
    Rule((GROUP,), (f"{PLURAL}/finalizers",), ("update",),
         "shard pods carry an owner reference with blockOwnerDeletion, which OwnerReferencesPermissionEnforcement "
         "allows only with update on the owner's finalizers"),
    Rule(("",), ("pods",), ("get", "list", "watch", "create", "patch", "delete"),
         "shard pods: create (only of the shard-pod shape: manifests/admission.yaml), watch, stop a stalled one "
         "(patch), remove"),
    Rule(("", "events.k8s.io"), ("events",), ("create", "patch"), "events explaining every decision"),
)
SECRETS_RULE = Rule(
    ("",), ("secrets",), ("get",),
    "the Secret an OcrJob names in spec.s3.credentialsSecret (get only, no list or watch), in the namespaces that "
    "granted it: the operator plans, follows heartbeats and writes the summary with the job's own credentials; its "
    "author must be allowed to get it (manifests/admission.yaml). Jobs on ambient credentials (workload identity) "
    "need no grant")


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(_LABELS)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _subject() -> dict[str, Any]:
    return {"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}


def cluster_wide() -> list[dict[str, Any]]:
    """For `--all-namespaces` only: the rules but Secrets in every namespace; Secrets where a namespace grants them
    (`secrets_role`, `grant_secrets`)."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(OPERATOR_ROLE),
         "rules": [rule.as_dict() for rule in RULES]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(OPERATOR_ROLE),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": OPERATOR_ROLE},
         "subjects": [_subject()]},
        secrets_role(),
    ]


def secrets_role() -> dict[str, Any]:
    """The ClusterRole a namespace binds to let the operator read its Secrets (bound nowhere by the install)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(SECRETS_ROLE),
            "rules": [SECRETS_RULE.as_dict()]}


def grant_secrets(namespace: str) -> dict[str, Any]:
    """The RoleBinding that lets the operator read the Secrets of `namespace` (what `grant_command` creates)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": _meta(SECRETS_ROLE, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SECRETS_ROLE},
            "subjects": [_subject()]}


def grant_command(namespace: str) -> str:
    """The one command a namespace admin runs so that OcrJobs of `namespace` may name its Secrets."""
    return (f"kubectl -n {namespace} create rolebinding {SECRETS_ROLE} --clusterrole={SECRETS_ROLE} "
            f"--serviceaccount={OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}")


def namespaced(namespaces: list[str], secrets: bool = True) -> list[dict[str, Any]]:
    """A Role and a RoleBinding in each namespace the operator watches (`--namespace NS`): nothing elsewhere.
    Without `secrets`, the operator may not read their Secrets (jobs on ambient credentials need none)."""
    rules = (*RULES, SECRETS_RULE) if secrets else RULES
    docs: list[dict[str, Any]] = []
    for namespace in namespaces:
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                     "metadata": _meta(OPERATOR_ROLE, namespace),
                     "rules": [rule.as_dict() for rule in rules]})
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                     "metadata": _meta(OPERATOR_ROLE, namespace),
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR_ROLE},
                     "subjects": [_subject()]})
    return docs


def render(docs: list[dict[str, Any]], header: str) -> str:
    why = "\n".join(textwrap.fill(f"{', '.join(rule.resources)}: {rule.why}.", 116, initial_indent="#   ",
                                   subsequent_indent="#     ") for rule in (*RULES, SECRETS_RULE))
    body = "---\n".join(yaml.safe_dump(doc, sort_keys=False, width=120) for doc in docs)
    return f"{header}\n# Least privilege for the OcrJob operator, rule by rule:\n{why}\n{body}"


CLUSTER_HEADER = ("# Generated by `python -m ocrjob_operator.api.rbac` from operator/ocrjob_operator/api/rbac.py.\n"
                  "# Cluster-wide, for the default `--all-namespaces` install. To watch only some namespaces, use\n"
                  "# `python -m ocrjob_operator.api.rbac --namespace NS ...` instead (a Role and RoleBinding each).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ocrjob_operator.api.rbac", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", "-n", action="append", default=[], help="a watched namespace (repeatable)")
    parser.add_argument("--grant-secrets", action="append", default=[], metavar="NS",
                        help="the RoleBinding that lets the --all-namespaces operator read NS's Secrets (repeatable)")
    args = parser.parse_args(argv)
    if args.grant_secrets:
        sys.stdout.write("---\n".join(yaml.safe_dump(grant_secrets(ns), sort_keys=False) for ns in args.grant_secrets))
    elif args.namespace:
        header = (f"# Generated by `python -m ocrjob_operator.api.rbac {' '.join('-n ' + n for n in args.namespace)}`"
                  f"; run the operator with {' '.join('--namespace ' + n for n in args.namespace)}.")
        sys.stdout.write(render(namespaced(args.namespace), header))
    else:
        sys.stdout.write(render(cluster_wide(), CLUSTER_HEADER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
