"""Names chosen once: the API group, labels, annotations, kopf's storage prefix and finalizer, and the shard
pod name format with its parser. Imports nothing of the operator, the CLI or the data plane."""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP = "ocrjob.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OcrJob"
PLURAL = "ocrjobs"
SINGULAR = "ocrjob"
SHORT_NAMES = ("ocr",)
CRD_NAME = f"{PLURAL}.{GROUP}"

# kopf keeps its own bookkeeping under our group, never under kopf.zalando.org.
KOPF_PREFIX = GROUP
FINALIZER = f"{GROUP}/finalizer"

MANAGED_BY = "ocrjob-operator"
OPERATOR_NAMESPACE = "ocrjob-system"  # where manifests/ installs the operator (and its leader-election Lease)
LEASE_NAME = "ocrjob-operator"  # the coordination.k8s.io Lease its instances elect a leader on
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_JOB = f"{GROUP}/job"  # the OcrJob's name (for humans and kubectl -l)
LABEL_JOB_UID = f"{GROUP}/job-uid"  # the OcrJob's uid (what the operator selects on: names can be reused)
LABEL_SHARD = f"{GROUP}/shard"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"

ANNOTATION_MANIFEST = f"{GROUP}/manifest"
# Set by the Job controller on each pod of an Indexed Job: its index, and how many earlier pods of that index
# failed, counted against backoffLimitPerIndex or ignored by the podFailurePolicy.
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
INDEX_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
INDEX_IGNORED_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-ignored-failure-count"
# Set on a pod before the operator kills it (stall), so the kill is classified correctly afterwards.
ANNOTATION_KILL_REASON = f"{GROUP}/kill-reason"
ANNOTATION_KILL_MESSAGE = f"{GROUP}/kill-message"

CONTAINER_NAME = "ocr"
GPU_RESOURCE = "nvidia.com/gpu"

# A pod name is `<job>-s<shard>-a<attempt>`; with at most 100000 shards (plan.MAX_SHARDS) and 1000 attempts the
# suffix is at most 12 characters, so a job name of at most 50 keeps pod names valid DNS labels (63).
MAX_JOB_NAME = 50
POD_NAME_SHAPE = "<name>-s<shard>-a<attempt>"  # for messages (the CRD's name rule says why names are bounded)
_POD_NAME_RE = re.compile(r"^(?P<job>.+)-s(?P<shard>\d+)-a(?P<attempt>\d+)$")


@dataclass(frozen=True)
class PodName:
    """The parts of a shard pod's name."""

    job: str
    shard: int
    attempt: int

    def __str__(self) -> str:
        return pod_name(self.job, self.shard, self.attempt)


def pod_name(job: str, shard: int, attempt: int) -> str:
    """The deterministic name of `attempt` of `shard` of OcrJob `job` (a second create is a harmless 409)."""
    return f"{job}-s{shard}-a{attempt}"


def parse_pod_name(name: str | None) -> PodName | None:
    """`pod_name`'s inverse; None for a name it did not make. A job name may itself contain `-s1-a2`: the
    last such suffix is the pod's."""
    match = _POD_NAME_RE.match(name or "")
    if match is None:
        return None
    return PodName(match["job"], int(match["shard"]), int(match["attempt"]))
