"""A second, always-Ready Node object for tests of node loss on a one-node cluster.

The node lifecycle controller taints nothing NoExecute while every node of a zone is NotReady: it takes that
for the control plane losing the nodes (full disruption), not the nodes failing. A cluster whose only kubelet is
stopped is in that state, so its pods are never evicted. A witness, a Node kept healthy by renewing its Lease in
kube-node-lease as a kubelet does, keeps the zone in normal mode; its NoSchedule taint keeps every pod off it.

    with WitnessNode(api_client):
        node.stop_kubelet()   # the taint manager now evicts the lost node's pods
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from types import TracebackType

import kubernetes
from kubernetes.client.exceptions import ApiException

NODE_LEASE_NAMESPACE = "kube-node-lease"
WITNESS_TAINT = "ocrjob.dev/witness"
RENEW_SECONDS = 2.0  # well inside the controller's node-monitor grace period (controlplane.py: 15 s)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class WitnessNode:
    """Creates the Node (Ready, tainted NoSchedule) and its Lease, renews the Lease from a thread, and deletes
    both on exit."""

    def __init__(self, api: kubernetes.client.ApiClient, name: str = "ocrjob-witness") -> None:
        self.name = name
        self.core = kubernetes.client.CoreV1Api(api)
        self.coordination = kubernetes.client.CoordinationV1Api(api)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_forever, name=f"witness-{name}", daemon=True)

    def __enter__(self) -> WitnessNode:
        self.core.create_node({"metadata": {"name": self.name, "labels": {WITNESS_TAINT: "true"}},
                               "spec": {"taints": [{"key": WITNESS_TAINT, "value": "true", "effect": "NoSchedule"}]}})
        try:
            now = _now()
            self.core.patch_node_status(self.name, {"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "witness",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}]}})
            self.coordination.create_namespaced_lease(NODE_LEASE_NAMESPACE, {
                "metadata": {"name": self.name}, "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                                                          "renewTime": now}})
        except BaseException:
            self._delete()
            raise
        self._thread.start()
        return self

    def _renew_forever(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            with contextlib.suppress(ApiException, OSError):
                self.coordination.patch_namespaced_lease(self.name, NODE_LEASE_NAMESPACE,
                                                         {"spec": {"renewTime": _now()}})

    def _delete(self) -> None:
        with contextlib.suppress(ApiException):
            self.coordination.delete_namespaced_lease(self.name, NODE_LEASE_NAMESPACE)
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.name)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._delete()
