"""The real node is a real node: pods in containers from imported images, logs through the kubelet, the pod
network reaching exactly S3 and the apiserver, env from Secrets/ConfigMaps/the downward API, restarts,
garbage collection, graceful deletion, GPUs from the device plugin,
kubelet restarts, and a teardown that leaves nothing on the host."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.support import hostclean, podnet
from tests.support.cluster import LocalCluster, pod_log
from tests.support.nodehost import RealNodeBusyError, leftovers
from tests.support.podnet import CLUSTER_DNS_IP, KUBERNETES_SERVICE_IP, KUBERNETES_SERVICE_PORT
from tests.support.procs import alive, wait_until
from tests.support.realnode import GPU, ImageArchive, RealNode, real_gpu_node_spec

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]
GPU_ID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BEYOND_THE_MACHINE = ("192.0.2.1", "1.1.1.1")  # this machine kind's eth0 gateway; a public address
# Reachable through no DNAT: a service IP the missing kube-proxy would have handled.
OTHER_SERVICE_IP = "10.0.0.2"


def bash_pod(cluster: LocalCluster, name: str, script: str, *, image: str = "base", **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": cluster.real_node_image(image), "imagePullPolicy": "Never",
                 "command": ["bash", "-c", script], **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container],
                     **spec}}


def wait_phase(core: CoreV1Api, ns: str, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed"),
               timeout: float = 120) -> Any:
    def done() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        return pod if pod.status.phase in phases else None

    return wait_until(done, timeout=timeout, what=f"pod {ns}/{name} in {phases}")


def terminated(pod: Any) -> Any:
    return pod.status.container_statuses[0].state.terminated


def test_pod_runs_to_completion_with_logs_through_the_kubelet(cluster: LocalCluster, core: CoreV1Api,
                                                              namespace: str) -> None:
    core.create_namespaced_pod(namespace, bash_pod(cluster, "hello",
                                                             'echo "hello from $(hostname)"; exit 3'))
    pod = wait_phase(core, namespace, "hello")
    assert pod.status.phase == "Failed"
    assert terminated(pod).exit_code == 3
    assert pod.spec.node_name == cluster.real_node.name
    assert pod_log(core, namespace, "hello") == "hello from hello\n"  # apiserver -> kubelet on the gateway


# One pod probes everything (targets in its environment); each line: "<what> ok|fail".
NETWORK_PROBE = r"""
probe() { if timeout 3 bash -c "$2" >/dev/null 2>&1; then echo "$1 ok"; else echo "$1 fail"; fi; }
probe s3 'exec 3<>/dev/tcp/$GW/$S3_PORT; printf "GET / HTTP/1.0\r\n\r\n" >&3; head -c 12 <&3 | grep -q "^HTTP/1"'
# Plain HTTP to the apiserver's TLS port: Go's TLS server answers in plain text, so this is the apiserver.
probe apiserver 'exec 3<>/dev/tcp/$API_IP/$API_PORT; printf "GET / HTTP/1.0\r\n\r\n" >&3; grep -q "HTTPS server" <&3'
for ip in $BEYOND; do probe "beyond-$ip" "exec 3<>/dev/tcp/$ip/80"; done
probe other-service 'exec 3<>/dev/tcp/$OTHER_IP/443'
probe dns-server 'exec 3<>/dev/tcp/$DNS_IP/53'
echo "nameserver $(grep -m1 nameserver /etc/resolv.conf | cut -d" " -f2)"
"""

# In-cluster config, unchanged: KUBERNETES_SERVICE_HOST/PORT from the kubelet, the ServiceAccount token and CA.
APISERVER_PROBE = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
req = urllib.request.Request(f"https://{host}:{port}/api/v1/namespaces/{open(f'{sa}/namespace').read()}/pods",
                             headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
try:
    urllib.request.urlopen(req, context=ctx, timeout=10)
    print(json.dumps({"host": host, "status": 200}))
except urllib.error.HTTPError as exc:  # 403: authenticated as the ServiceAccount, which may not list pods
    print(json.dumps({"host": host, "status": exc.code, "body": json.loads(exc.read())}))
"""


def test_pod_network_reaches_s3_and_apiserver_and_nothing_beyond(cluster: LocalCluster, core: CoreV1Api,
                                                                 namespace: str) -> None:
    node = cluster.real_node
    targets = {"GW": node.gateway, "S3_PORT": cluster.s3.ports["s3"], "API_IP": KUBERNETES_SERVICE_IP,
               "API_PORT": KUBERNETES_SERVICE_PORT, "BEYOND": " ".join(BEYOND_THE_MACHINE),
               "OTHER_IP": OTHER_SERVICE_IP, "DNS_IP": CLUSTER_DNS_IP}
    env = [{"name": k, "value": str(v)} for k, v in targets.items()]
    pod = bash_pod(cluster, "net", NETWORK_PROBE, container={"env": env})
    core.create_namespaced_pod(namespace, pod)
    assert wait_phase(core, namespace, "net").status.phase == "Succeeded"
    results = dict(line.split() for line in pod_log(core, namespace, "net").splitlines())
    assert results == {"s3": "ok", "apiserver": "ok", "other-service": "fail", "dns-server": "fail",
                       "nameserver": CLUSTER_DNS_IP,  # not the host's
                       **{f"beyond-{ip}": "fail" for ip in BEYOND_THE_MACHINE}}


def test_in_cluster_config_reaches_the_apiserver_with_the_service_account(
        cluster: LocalCluster, core: CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, bash_pod(cluster, "api", "", image="python-base",
                                                             container={"command": ["python", "-c", APISERVER_PROBE]}))
    assert wait_phase(core, namespace, "api").status.phase == "Succeeded"
    answer = json.loads(pod_log(core, namespace, "api"))
    assert answer["host"] == KUBERNETES_SERVICE_IP
    assert answer["status"] == 403, answer  # TLS verified with the SA's CA, token accepted, RBAC said no
    assert f"system:serviceaccount:{namespace}:default" in answer["body"]["message"]


def test_deletion_sends_sigterm_and_honours_the_grace_period(cluster: LocalCluster, core: CoreV1Api,
                                                             namespace: str) -> None:
    # The handler needs ~2 s: it only finishes if the kubelet waits (grace 20 s) instead of SIGKILLing.
    script = ("trap 'echo got TERM; sleep 2; echo handler done; exit 0' TERM; echo started; "
              "while true; do sleep 0.2; done")
    core.create_namespaced_pod(namespace, bash_pod(cluster, "graceful", script,
                                                             terminationGracePeriodSeconds=20))
    wait_phase(core, namespace, "graceful", ("Running",))
    wait_until(lambda: "started" in pod_log(core, namespace, "graceful"), timeout=30, what="started")
    followed: list[str] = []
    resp = core.read_namespaced_pod_log("graceful", namespace, follow=True, _preload_content=False)
    reader = threading.Thread(target=lambda: followed.append(resp.read().decode(errors="replace")), daemon=True)
    reader.start()
    core.delete_namespaced_pod("graceful", namespace)
    wait_gone(core, namespace, "graceful")
    reader.join(timeout=30)
    assert followed and followed[0].splitlines() == ["started", "got TERM", "handler done"]


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


def scheduled_condition(pod: Any) -> Any:
    return next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)


def test_too_many_gpus_stay_pending_with_the_schedulers_reason(cluster: LocalCluster, core: CoreV1Api,
                                                               namespace: str) -> None:
    core.create_namespaced_pod(namespace, bash_pod(cluster, "greedy", "true", container={
        "resources": {"limits": {GPU: "3"}}}))

    def unschedulable() -> Any:
        pod = core.read_namespaced_pod("greedy", namespace)
        cond = scheduled_condition(pod)
        return pod if cond and cond.status == "False" and cond.reason == "Unschedulable" else None

    pod = wait_until(unschedulable, timeout=30, what="greedy Unschedulable")
    assert "Insufficient nvidia.com/gpu" in scheduled_condition(pod).message
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def wait_gone(core: CoreV1Api, ns: str, name: str, timeout: float = 60) -> None:
    def gone() -> bool:
        try:
            core.read_namespaced_pod(name, ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, timeout=timeout, what=f"pod {ns}/{name} to be deleted")


def test_deleting_the_owner_garbage_collects_its_pods(cluster: LocalCluster, core: CoreV1Api,
                                                      namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid,
           "blockOwnerDeletion": True}
    pod = bash_pod(cluster, "owned", "trap 'exit 0' TERM; sleep 300 & wait")
    pod["metadata"]["ownerReferences"] = [ref]
    core.create_namespaced_pod(namespace, pod)
    wait_phase(core, namespace, "owned", ("Running",))
    core.delete_namespaced_config_map("owner", namespace)
    wait_gone(core, namespace, "owned", timeout=60)


def test_secret_configmap_and_downward_env_reach_the_container(cluster: LocalCluster, core: CoreV1Api,
                                                               namespace: str) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"TOKEN": "s3cr3t"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    pod = bash_pod(cluster, "env", 'echo "token=$APP_TOKEN mode=$MODE app=$APP ns=$NS"', container={
        "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "APP_"}],
        "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]})
    pod["metadata"]["labels"] = {"app": "ocr"}
    core.create_namespaced_pod(namespace, pod)
    assert wait_phase(core, namespace, "env").status.phase == "Succeeded"
    assert pod_log(core, namespace, "env") == f"token=s3cr3t mode=fast app=ocr ns={namespace}\n"


def test_missing_secret_blocks_the_start_until_it_exists(cluster: LocalCluster, core: CoreV1Api,
                                                         namespace: str) -> None:
    core.create_namespaced_pod(namespace, bash_pod(cluster, "needs-creds", 'echo "$KEY"',
                                                   container={"envFrom": [{"secretRef": {"name": "late"}}]}))

    def config_error() -> Any:
        pod = core.read_namespaced_pod("needs-creds", namespace)
        statuses = pod.status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return pod if waiting and waiting.reason == "CreateContainerConfigError" else None

    pod = wait_until(config_error, timeout=60, what="CreateContainerConfigError")
    assert 'secret "late" not found' in pod.status.container_statuses[0].state.waiting.message
    core.create_namespaced_secret(namespace, {"metadata": {"name": "late"}, "stringData": {"KEY": "finally"}})
    assert wait_phase(core, namespace, "needs-creds").status.phase == "Succeeded"
    assert pod_log(core, namespace, "needs-creds") == "finally\n"


def test_restart_policy_on_failure_restarts_the_container(cluster: LocalCluster, core: CoreV1Api,
                                                          namespace: str) -> None:
    """The emptyDir outlives the first container: the restarted one sees the marker and succeeds."""
    script = "if [ -e /scratch/tried ]; then exit 0; fi; touch /scratch/tried; exit 1"
    pod = bash_pod(cluster, "flaky", script, restartPolicy="OnFailure",
                   volumes=[{"name": "scratch", "emptyDir": {}}],
                   container={"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]})
    core.create_namespaced_pod(namespace, pod)
    pod = wait_phase(core, namespace, "flaky", timeout=120)
    status = pod.status.container_statuses[0]
    assert (pod.status.phase, status.restart_count) == ("Succeeded", 1)
    assert status.last_state.terminated.exit_code == 1


GPU_POD = 'echo "$NVIDIA_VISIBLE_DEVICES $CUDA_VISIBLE_DEVICES"; trap "exit 0" TERM; while true; do sleep 0.2; done'


def test_two_gpu_pods_get_distinct_devices_from_the_plugin(cluster: LocalCluster, core: CoreV1Api,
                                                           namespace: str) -> None:
    node = cluster.real_node
    allocatable = core.read_node(node.name).status.allocatable
    assert allocatable[GPU] == str(len(node.gpu_ids)) == "2"
    gpu = {"resources": {"limits": {GPU: "1"}}}
    for name in ("gpu-a", "gpu-b", "gpu-c"):
        core.create_namespaced_pod(namespace, bash_pod(cluster, name, GPU_POD, container=gpu))
    seen = {}
    for name in ("gpu-a", "gpu-b"):  # the scheduler places two; each holds its device while it runs
        wait_phase(core, namespace, name, ("Running",))
        line = wait_until(lambda name=name: pod_log(core, namespace, name).strip(), timeout=30,
                          what=f"{name} output")
        nvidia, cuda = line.split()
        assert nvidia == cuda and GPU_ID.match(nvidia), line
        seen[name] = nvidia
    assert seen["gpu-a"] != seen["gpu-b"]
    assert set(seen.values()) == set(node.gpu_ids)
    third = core.read_namespaced_pod("gpu-c", namespace)
    assert third.status.phase == "Pending"  # no third device: the scheduler holds it back
    # The kubelet's own record agrees: each container's allocated resource is the device it saw.
    for name, device in seen.items():
        status = core.read_namespaced_pod(name, namespace).status.container_statuses[0]
        assert [r.resource_id for r in status.allocated_resources_status[0].resources] == [device]


def test_kubelet_restart_keeps_the_node_and_its_gpus(cluster: LocalCluster, core: CoreV1Api,
                                                     namespace: str) -> None:
    node = cluster.real_node
    registrations = node.plugin_registrations()
    node.restart_kubelet()  # it wipes the device-plugins directory: the plugin must serve and register again
    assert node.plugin_registrations() > registrations
    core.create_namespaced_pod(namespace, bash_pod(cluster, "after", 'echo "$NVIDIA_VISIBLE_DEVICES"',
                                                             container={"resources": {"limits": {GPU: "1"}}}))
    assert wait_phase(core, namespace, "after").status.phase == "Succeeded"
    assert pod_log(core, namespace, "after").strip() in node.gpu_ids


def test_a_second_real_node_on_the_host_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    running = cluster.real_node
    other = RealNode(cluster.control_plane, real_gpu_node_spec("ocrjob-node-1"), tmp_path,
                     pause=ImageArchive(running.pause.ref, running.pause.archive))
    with pytest.raises(RealNodeBusyError, match=f"pid {running.holder_pid}"):
        other.start()
    assert running.core().read_node(running.name)  # the running node was not touched
    assert podnet.leftovers()  # its network is still there


def test_teardown_leaves_nothing_on_the_host(cluster: LocalCluster, core: CoreV1Api,
                                             namespace: str) -> None:
    """Last in this module: it stops the session's node (a running pod in it) and starts a fresh one."""
    node = cluster.real_node
    before = node.host_snapshot
    core.create_namespaced_pod(namespace, bash_pod(cluster, "busy", GPU_POD,
                                                             container={"resources": {"limits": {GPU: "1"}}}))
    wait_phase(core, namespace, "busy", ("Running",))
    assert podnet.bridge_ports() and hostclean.cgroup_dirs("kubepods") and hostclean.mounts_under(node.workdir)
    pids = list(node.procs.values())
    shims = hostclean.pids_mentioning(str(node.ctrd.socket))
    assert shims

    node.stop()

    assert leftovers() == []
    assert hostclean.mounts_under(node.workdir) == []
    assert not any(alive(p.pid) for p in pids) and not any(alive(pid) for pid in shims)
    assert hostclean.HostSnapshot.take().sysctls == before.sysctls
    assert {p for p in hostclean.HOST_PATHS if p.exists()} == before.paths
    cluster.restart_real_node()  # later tests (and the session's teardown) get a node again
