"""The Kubernetes manifests in deploy/k8s parse as YAML and grant exactly what the executor needs.

As documents, here; test_kubernetes_cluster.py applies them to a real API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.executor.kubernetes.names import job_labels

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def documents(name: str) -> dict[str, dict[str, Any]]:
    with (DEPLOY / name).open(encoding="utf-8") as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if doc]
    return {doc["kind"]: doc for doc in docs}


def test_rbac_is_a_service_account_role_and_binding_in_the_autoscorer_namespace() -> None:
    docs = documents("executor-rbac.yaml")
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding"}
    assert {doc["metadata"]["namespace"] for doc in docs.values()} == {"autoscorer"}


def test_role_grants_only_jobs_pods_and_pod_logs() -> None:
    rules = documents("executor-rbac.yaml")["Role"]["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    jobs = {("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")}
    pods = {("", "pods", v) for v in ("get", "list", "watch")}
    assert granted == jobs | pods | {("", "pods/log", "get")}
    assert all("*" not in str(rule) for rule in rules)


def test_binding_ties_the_role_to_the_service_account() -> None:
    docs = documents("executor-rbac.yaml")
    binding = docs["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": docs["Role"]["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": docs["ServiceAccount"]["metadata"]["name"],
            "namespace": "autoscorer",
        }
    ]


def test_network_policy_denies_all_traffic_of_job_pods() -> None:
    policy = documents("job-networkpolicy.yaml")["NetworkPolicy"]
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "autoscorer"
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert spec.get("ingress", []) == []
    assert spec.get("egress", []) == []
    selector = spec["podSelector"]["matchLabels"]
    assert selector  # an empty selector would cut off every pod in the namespace
    assert selector.items() <= job_labels("any-job").items()
