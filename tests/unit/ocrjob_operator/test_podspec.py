"""The shard pod builder: deterministic, owned, labelled, one GPU, credentials only by reference."""

from __future__ import annotations

import json
import math

from inference_pod.job import settings
from inference_pod.job.settings import (
    ATTEMPT_ENV,
    DEFAULT_TERMINATION_LOG,
    JOB_NAME_ENV,
    POD_NAME_ENV,
    S3_ENDPOINT_ENV,
    S3_PATH_STYLE_ENV,
    S3_REGION_ENV,
    SHARD_ENV,
)
from ocrjob_operator.api.names import GPU_RESOURCE, LABEL_ATTEMPT, LABEL_JOB, LABEL_JOB_UID, LABEL_SHARD, pod_name
from ocrjob_operator.api.spec import parse_spec
from ocrjob_operator.podspec import (
    LOADER_GRACE_SECONDS,
    SCRATCH_MOUNT,
    SCRATCH_VOLUME,
    TERMINATION_GRACE_SECONDS,
    JobRef,
    build_pod,
    job_selector,
)

JOB = JobRef("scan-2024", "team-a", "0b8f3c7e-1111-2222-3333-444455556666")
MANIFEST = "s3://bucket/results/_ocrjob/0b8f3c7e-1111-2222-3333-444455556666/shards/00003.json"


def spec(**extra):
    return parse_spec({"input": {"uri": "s3://bucket/scans"}, "output": {"uri": "s3://bucket/results"},
                       "image": "reg/ocr:1", "sharding": {"shardCount": 4}, **extra})


def env_of(pod) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


def test_same_inputs_same_pod() -> None:
    s = spec(s3={"credentialsSecret": {"name": "s3"}})
    assert build_pod(JOB, s, 3, 1, MANIFEST) == build_pod(JOB, s, 3, 1, MANIFEST)


def test_name_labels_owner() -> None:
    pod = build_pod(JOB, spec(queueName="gpu-queue"), 3, 2, MANIFEST)
    meta = pod["metadata"]
    assert meta["name"] == pod_name("scan-2024", 3, 2)
    assert meta["namespace"] == "team-a"
    assert meta["labels"][LABEL_JOB] == "scan-2024" and meta["labels"][LABEL_JOB_UID] == JOB.uid
    assert meta["labels"][LABEL_SHARD] == "3" and meta["labels"][LABEL_ATTEMPT] == "2"
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job_selector(JOB.uid) == f"{LABEL_JOB_UID}={JOB.uid}"
    (owner,) = meta["ownerReferences"]
    assert owner == {"apiVersion": "ocrjob.dev/v1alpha1", "kind": "OcrJob", "name": "scan-2024", "uid": JOB.uid,
                     "controller": True, "blockOwnerDeletion": True}
    assert pod["spec"]["restartPolicy"] == "Never"


def test_gpu_device_requests_exactly_one_gpu_and_tolerates_the_gpu_taint() -> None:
    pod = build_pod(JOB, spec(resources={"limits": {"memory": "24Gi"}}), 0, 0, MANIFEST)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"memory": "24Gi", GPU_RESOURCE: 1}
    assert resources["requests"][GPU_RESOURCE] == 1
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    assert env_of(pod)[settings.BY_NAME["device"].env] == "gpu"


def test_cpu_device_requests_no_gpu() -> None:
    pod = build_pod(JOB, spec(device="cpu"), 0, 0, MANIFEST)
    assert GPU_RESOURCE not in json.dumps(pod["spec"]["containers"][0]["resources"])
    assert "tolerations" not in pod["spec"]


def test_environment_carries_the_job_and_credentials_by_reference_only() -> None:
    s = spec(s3={"endpoint": "http://s3:8333", "region": "eu-1", "credentialsSecret": {"name": "s3-creds"}},
             workersPerPod=2, ocr={"pageBatchSize": 8, "detLimitSideLen": 1280},
             models={"detection": {"name": "d", "location": "s3://models/det"},
                     "recognition": {"name": "r", "location": "s3://models/rec"}})
    pod = build_pod(JOB, s, 3, 1, MANIFEST)
    env = env_of(pod)
    loader = {s.name: env.get(s.env) for s in settings.SETTINGS}
    assert loader["manifest"] == MANIFEST and env[ATTEMPT_ENV] == "1"
    assert env[JOB_NAME_ENV] == "scan-2024" and env[SHARD_ENV] == "3"
    assert loader["workers_per_device"] == "2" and loader["page_batch_size"] == "8"
    assert loader["det_limit_side_len"] == "1280"
    assert env[S3_ENDPOINT_ENV] == "http://s3:8333" and env[S3_REGION_ENV] == "eu-1"
    assert env[S3_PATH_STYLE_ENV] == "true"
    assert loader["det_model_dir"] == "s3://models/det" and loader["rec_model_name"] == "r"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env[POD_NAME_ENV] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert pod["spec"]["containers"][0]["command"] == ["python", "-m", "inference_pod"]
    assert pod["spec"]["containers"][0]["terminationMessagePath"] == DEFAULT_TERMINATION_LOG


def test_defaults_and_the_grace_period_come_from_the_settings_table() -> None:
    pod = build_pod(JOB, spec(), 0, 0, MANIFEST)
    env = env_of(pod)
    assert env == {**env, **settings.environment({s.name: s.default for s in settings.SETTINGS
                                                 if s.spec and s.default is not None})}
    assert settings.default("grace_seconds") == LOADER_GRACE_SECONDS
    assert env[settings.BY_NAME["grace_seconds"].env] == settings.environment(
        {"grace_seconds": LOADER_GRACE_SECONDS})[settings.BY_NAME["grace_seconds"].env]
    # Kubernetes waits a little longer than the loader's own grace before it kills the container.
    assert pod["spec"]["terminationGracePeriodSeconds"] == TERMINATION_GRACE_SECONDS > math.ceil(LOADER_GRACE_SECONDS)
    assert not any(s.env in env for s in settings.SETTINGS if s.name in settings.MODEL_SETTINGS)  # bundled models


def test_scheduling_fields_pass_through() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    s = spec(nodeSelector={"nvidia.com/gpu.product": "A100"}, affinity=affinity, priorityClassName="batch-low",
             serviceAccountName="ocr-runner", tolerations=[{"key": "spot", "operator": "Exists"}],
             shardDeadlineSeconds=7200, imagePullPolicy="IfNotPresent", imagePullSecrets=[{"name": "regcred"}])
    pod = build_pod(JOB, s, 1, 0, MANIFEST)["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"} and pod["affinity"] == affinity
    assert pod["priorityClassName"] == "batch-low" and pod["serviceAccountName"] == "ocr-runner"
    assert {"key": "spot", "operator": "Exists"} in pod["tolerations"]
    assert pod["activeDeadlineSeconds"] == 7200 and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_root_filesystem_is_read_only_with_an_emptydir_for_scratch() -> None:
    pod = build_pod(JOB, spec(), 0, 0, MANIFEST)["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT}]
    assert pod["volumes"] == [{"name": SCRATCH_VOLUME, "emptyDir": {}}]
