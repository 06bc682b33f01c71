"""The local cluster is real: real scheduler, garbage collector, node lifecycle; pods run as processes."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.support.cluster import LocalCluster, pod_log
from tests.support.processnode import NodeSpec
from tests.support.procs import wait_until

pytestmark = pytest.mark.cluster


# Exits 1.5 s after SIGTERM, so a terminating pod can be observed before it is gone.
SLOW_SHUTDOWN = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.5), sys.exit(0)))
while True:
    time.sleep(0.1)
"""


def python_pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A pod running `python -c script` (the image maps to the repo venv on process nodes)."""
    container = {"name": "main", "image": "ocrjob/test:dev", "command": ["python", "-c", textwrap.dedent(script)]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, **spec.pop("metadata", {})},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container],
                     **spec}}


def wait_pod(core: CoreV1Api, ns: str, name: str, check: Any, what: str, timeout: float = 60) -> Any:
    def probe() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        return pod if check(pod) else None

    return wait_until(probe, timeout=timeout, what=f"pod {ns}/{name}: {what}")


def wait_gone(core: CoreV1Api, ns: str, name: str, timeout: float = 60) -> None:
    def gone() -> bool:
        try:
            core.read_namespaced_pod(name, ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, timeout=timeout, what=f"pod {ns}/{name} to be deleted")


def condition(pod: Any, kind: str) -> Any:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def running(pod: Any) -> bool:
    return pod.status.phase == "Running"


def terminal(pod: Any) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def logs_contain(core: CoreV1Api, ns: str, name: str, text: str, timeout: float = 30) -> str:
    return wait_until(lambda: (log := pod_log(core, ns, name)) and text in log and log,
                      timeout=timeout, what=f"{text!r} in the logs of {ns}/{name}")


@pytest.fixture
def core(k8s_api: kubernetes.client.ApiClient) -> CoreV1Api:
    return CoreV1Api(k8s_api)


def test_pod_runs_to_completion_with_exit_code_message_and_logs(cluster: LocalCluster, core: CoreV1Api,
                                                                namespace: str) -> None:
    failing = python_pod("fails", """
        import os
        print("hello from", os.environ["POD_NAME"], "on", os.environ["NODE"], "gpus:",
              os.environ["NVIDIA_VISIBLE_DEVICES"], flush=True)
        with open(os.environ["OCRJOB_TERMINATION_LOG"], "w") as f:
            f.write("summary: 3 items failed")
        raise SystemExit(3)
    """, container={"env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]})
    # The pod's identity is its ServiceAccount token: kubectl (on the venv PATH) picks up KUBECONFIG.
    whoami = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "whoami"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "main", "image": "ocrjob/test:dev", "command": [
            "sh", "-c", "kubectl auth whoami -o jsonpath='{.status.userInfo.username}'; echo; echo done"]}]}}
    core.create_namespaced_pod(namespace, failing)
    core.create_namespaced_pod(namespace, whoami)

    pod = wait_pod(core, namespace, "fails", terminal, "finished")
    assert pod.spec.node_name == cluster.node.name
    assert condition(pod, "PodScheduled").status == "True"
    assert pod.status.phase == "Failed"
    state = pod.status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason, state.message) == (3, "Error", "summary: 3 items failed")
    assert state.started_at and state.finished_at
    log = pod_log(core, namespace, "fails")
    assert f"hello from fails on {cluster.node.name} gpus: void" in log
    assert pod_log(core, namespace, "fails", tail_lines=1).count("\n") == 1

    pod = wait_pod(core, namespace, "whoami", terminal, "finished")
    assert pod.status.phase == "Succeeded", pod_log(core, namespace, "whoami")
    assert pod.status.container_statuses[0].state.terminated.reason == "Completed"
    assert pod_log(core, namespace, "whoami").splitlines() == [
        f"system:serviceaccount:{namespace}:default", "done"]


def test_watches_start_while_other_resources_change(core: CoreV1Api, namespace: str) -> None:
    """A watch without a resourceVersion needs the apiserver's pod cache at etcd's newest revision. With no
    pod events that only happens through etcd's progress notifications: without them every such watch (kopf's,
    kubectl's, the e2e pod recorder's) waits 3 s and fails with 504 "Too large resource version"."""
    for i in range(3):  # advance etcd's revision with anything but pods
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"churn-{i}"}})
    for _ in range(2):
        events = list(kubernetes.watch.Watch().stream(core.list_namespaced_pod, namespace, timeout_seconds=1,
                                                      _request_timeout=15))
        assert events == []  # and no ApiException(504)
        core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "churn-"}})


def test_too_many_gpus_stay_pending_with_the_schedulers_reason(core: CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod("greedy", "pass", container={
        "resources": {"limits": {"nvidia.com/gpu": "3"}}}))

    def unschedulable(pod: Any) -> bool:
        cond = condition(pod, "PodScheduled")
        return bool(cond and cond.status == "False" and cond.reason == "Unschedulable")

    pod = wait_pod(core, namespace, "greedy", unschedulable, "Unschedulable", timeout=30)
    assert "Insufficient nvidia.com/gpu" in condition(pod, "PodScheduled").message
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_each_gpu_pod_gets_its_own_fake_device(core: CoreV1Api, namespace: str, tmp_path: Path) -> None:
    release = tmp_path / "release"
    script = """
        import os, time
        print(os.environ["NVIDIA_VISIBLE_DEVICES"], os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
        while not os.path.exists(os.environ["RELEASE"]):  # hold the GPU until both pods run
            time.sleep(0.1)
    """
    for name in ("gpu-a", "gpu-b"):
        core.create_namespaced_pod(namespace, python_pod(name, script, container={
            "resources": {"limits": {"nvidia.com/gpu": "1"}}, "env": [{"name": "RELEASE", "value": str(release)}]}))
    lines = [logs_contain(core, namespace, name, "\n").split() for name in ("gpu-a", "gpu-b")]
    release.touch()
    assert sorted(nvidia for nvidia, _ in lines) == ["0", "1"]
    assert all(nvidia == cuda for nvidia, cuda in lines)
    for name in ("gpu-a", "gpu-b"):
        assert wait_pod(core, namespace, name, terminal, "finished").status.phase == "Succeeded"


def test_deleting_the_owner_garbage_collects_its_pods(core: CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid,
           "blockOwnerDeletion": True}
    core.create_namespaced_pod(namespace, python_pod("owned", "import time; time.sleep(300)",
                                                     metadata={"ownerReferences": [ref]}))
    wait_pod(core, namespace, "owned", running, "Running")
    core.delete_namespaced_config_map("owner", namespace)
    wait_gone(core, namespace, "owned", timeout=60)


def test_secret_env_reaches_the_process_and_deletion_sends_sigterm(cluster: LocalCluster, core: CoreV1Api,
                                                                   namespace: str) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"TOKEN": "s3cr3t"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    pod = python_pod("graceful", """
        import os, signal, sys, time
        def on_term(signum, frame):
            print("got SIGTERM", flush=True)
            open("sigterm-marker", "w").write("terminated")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        print("token=" + os.environ["APP_TOKEN"], "mode=" + os.environ["MODE"], "app=" + os.environ["APP"],
              "ns=" + os.environ["NS"], flush=True)
        while True:
            time.sleep(0.1)
    """, metadata={"labels": {"app": "ocr"}}, container={
        "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "APP_"}],
        "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]})
    core.create_namespaced_pod(namespace, pod)
    log = logs_contain(core, namespace, "graceful", "token=")
    assert f"token=s3cr3t mode=fast app=ocr ns={namespace}" in log
    pod_dir = cluster.node.pod_dir(namespace, "graceful")

    core.delete_namespaced_pod("graceful", namespace, grace_period_seconds=20)
    wait_until(lambda: (pod_dir / "sigterm-marker").exists(), timeout=15, what="the SIGTERM marker")
    wait_gone(core, namespace, "graceful", timeout=15)  # exited on SIGTERM: gone long before the 20 s
    assert "got SIGTERM" in (pod_dir / "main.log").read_text()


def test_missing_secret_blocks_the_start_until_it_exists(core: CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod("needs-creds", "import os; print(os.environ['KEY'])",
                                                     container={"envFrom": [{"secretRef": {"name": "late"}}]}))

    def config_error(pod: Any) -> bool:
        statuses = pod.status.container_statuses or []
        return bool(statuses and statuses[0].state.waiting
                    and statuses[0].state.waiting.reason == "CreateContainerConfigError")

    pod = wait_pod(core, namespace, "needs-creds", config_error, "CreateContainerConfigError", timeout=30)
    assert 'secret "late" not found' in pod.status.container_statuses[0].state.waiting.message
    core.create_namespaced_secret(namespace, {"metadata": {"name": "late"}, "stringData": {"KEY": "finally"}})
    assert wait_pod(core, namespace, "needs-creds", terminal, "finished").status.phase == "Succeeded"
    assert pod_log(core, namespace, "needs-creds") == "finally\n"


def test_restart_policy_on_failure_restarts_the_process(core: CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod("flaky", """
        import os, sys
        if not os.path.exists("tried"):  # the pod directory survives restarts, like an emptyDir
            open("tried", "w").close()
            sys.exit(1)
    """, restartPolicy="OnFailure"))
    pod = wait_pod(core, namespace, "flaky", terminal, "finished", timeout=30)
    status = pod.status.container_statuses[0]
    assert (pod.status.phase, status.restart_count) == ("Succeeded", 1)
    assert status.last_state.terminated.exit_code == 1


def test_kubelet_eviction_and_simulated_oom(cluster: LocalCluster, core: CoreV1Api, namespace: str) -> None:
    for name in ("evicted", "oom"):
        core.create_namespaced_pod(namespace, python_pod(name, "import time; time.sleep(300)"))
    for name in ("evicted", "oom"):
        wait_pod(core, namespace, name, running, "Running")

    cluster.node.evict(namespace, "evicted")
    pod = wait_pod(core, namespace, "evicted", terminal, "Failed")
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    disruption = condition(pod, "DisruptionTarget")
    assert (disruption.status, disruption.reason) == ("True", "TerminationByKubelet")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137

    cluster.node.oom_kill(namespace, "oom")
    pod = wait_pod(core, namespace, "oom", terminal, "Failed")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.reason, terminated.exit_code) == ("Failed", "OOMKilled", 137)


def test_api_eviction_marks_the_pod_as_disruption_target(core: CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod("api-evicted", SLOW_SHUTDOWN))
    wait_pod(core, namespace, "api-evicted", running, "Running")
    core.create_namespaced_pod_eviction("api-evicted", namespace, {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "api-evicted", "namespace": namespace}})
    pod = core.read_namespaced_pod("api-evicted", namespace)
    disruption = condition(pod, "DisruptionTarget")
    assert pod.metadata.deletion_timestamp is not None
    assert (disruption.status, disruption.reason) == ("True", "EvictionByEvictionAPI")
    wait_gone(core, namespace, "api-evicted", timeout=20)


def test_scheduler_preemption_marks_victims_and_runs_the_preemptor(k8s_api: kubernetes.client.ApiClient,
                                                                  core: CoreV1Api, namespace: str) -> None:
    scheduling = kubernetes.client.SchedulingV1Api(k8s_api)
    low, high = f"{namespace}-low", f"{namespace}-high"
    for name, value in ((low, 10), (high, 1000)):
        scheduling.create_priority_class({"metadata": {"name": name}, "value": value})
    try:
        gpu = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
        for name in ("victim-a", "victim-b"):
            core.create_namespaced_pod(namespace, python_pod(name, SLOW_SHUTDOWN, priorityClassName=low,
                                                             container=gpu))
        for name in ("victim-a", "victim-b"):
            wait_pod(core, namespace, name, running, "Running")
        core.create_namespaced_pod(namespace, python_pod("preemptor", "print('got both GPUs')", priorityClassName=high,
                                                         container={"resources": {"limits": {"nvidia.com/gpu": "2"}}}))

        seen: set[str] = set()

        def victims_preempted() -> bool:
            for name in {"victim-a", "victim-b"} - seen:
                pod = core.read_namespaced_pod(name, namespace)  # slow shutdown: still there for a while
                cond = condition(pod, "DisruptionTarget")
                if pod.metadata.deletion_timestamp and cond and cond.reason == "PreemptionByScheduler":
                    seen.add(name)
            return len(seen) == 2

        wait_until(victims_preempted, timeout=30, what="both victims marked PreemptionByScheduler")
        assert wait_pod(core, namespace, "preemptor", terminal, "finished").status.phase == "Succeeded"
    finally:
        for name in (low, high):
            scheduling.delete_priority_class(name)


def test_active_deadline_fails_the_pod(core: CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, python_pod("late", "import time; time.sleep(300)",
                                                     activeDeadlineSeconds=2))
    pod = wait_pod(core, namespace, "late", terminal, "Failed", timeout=30)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")


def test_lost_node_is_marked_unknown_and_its_pods_evicted(cluster: LocalCluster, core: CoreV1Api,
                                                           namespace: str) -> None:
    taint = {"key": "ocrjob.dev/doomed", "value": "true", "effect": "NoSchedule"}
    node = cluster.add_node(NodeSpec(name=f"doomed-{namespace[-6:]}", labels={"ocrjob.dev/pool": "doomed"},
                                     taints=[taint]))
    try:
        tolerations = [{"key": "ocrjob.dev/doomed", "operator": "Exists", "effect": "NoSchedule"},
                       *({"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": "NoExecute",
                          "tolerationSeconds": 1} for k in ("unreachable", "not-ready"))]
        core.create_namespaced_pod(namespace, python_pod("stranded", "import time; time.sleep(300)",
                                                         nodeSelector={"ocrjob.dev/pool": "doomed"},
                                                         tolerations=tolerations))
        assert wait_pod(core, namespace, "stranded", running, "Running").spec.node_name == node.name
        node.lose_node()

        def ready_unknown() -> bool:
            conds = {c.type: c.status for c in core.read_node(node.name).status.conditions}
            return conds["Ready"] == "Unknown"

        wait_until(ready_unknown, timeout=60, what=f"node {node.name} Ready=Unknown")
        pod = wait_pod(core, namespace, "stranded", lambda p: p.metadata.deletion_timestamp, "deleted", 60)
        disruption = condition(pod, "DisruptionTarget")
        assert (disruption.status, disruption.reason) == ("True", "DeletionByTaintManager")
    finally:
        node.stop()  # deletes the Node; nobody confirms the pod deletion, so force it
        with contextlib.suppress(ApiException):
            core.delete_namespaced_pod("stranded", namespace, grace_period_seconds=0)
