"""The OcrJob spec fields that carry a bound, a default, a choice or an `ocrjob submit` flag, declared once.

From this table the CRD generator builds those fields' schemas (description, minimum, maximum, default, enum),
`parse_spec` takes its bounds and defaults, and the CLI derives `SubmitFlags` and the `submit` options. The
spec fields that are loader settings (`Setting.spec`: workersPerPod, ocr.*, models.*, device) take their type,
bounds, default and help from `inference_pod.job.settings`, where they are declared; the shard cap is the planner's
(`inference_pod.job.plan.MAX_SHARDS`). Imports the storage contract only: never the operator loop, the CLI or
kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from inference_pod.job import settings
from inference_pod.job.plan import MAX_SHARDS

DEVICES = ("gpu", "cpu")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
CLEANUP_POLICIES = ("DeleteSucceeded", "Delete", "Keep")
MAX_BACKOFF_SECONDS = 600  # the doubling backoff between counted retries stops growing here
# Free retries after an infrastructure failure (storage unavailable): 5 s doubling to 60 s.
INFRASTRUCTURE_BACKOFF_SECONDS = 5
MAX_INFRASTRUCTURE_BACKOFF_SECONDS = 60
VANISHED_KEPT = 200  # status.vanishedPods.pods keeps this many records (its count is exact)


class Convert(Enum):
    """How a submit flag's text becomes the spec value (the CLI owns the parsers)."""

    SECONDS = "seconds"  # a duration (90s, 15m, 2h) -> whole seconds
    PAIRS = "pairs"  # repeated KEY=VALUE -> a map of strings
    QUANTITIES = "quantities"  # repeated KEY=VALUE -> a map of quantities (digits become integers)
    NAMES = "names"  # repeated NAME -> [{name: NAME}]


@dataclass(frozen=True)
class SpecField:
    """One spec field. `flag` is the `ocrjob submit` option ("--a/--b" for a boolean pair; a bare boolean flag
    only sets true); `help` is the CRD description, and the flag's help unless `flag_help` is given."""

    path: str  # camelCase, dotted below spec
    type: type = str  # int, str, bool, or list (a repeatable flag)
    help: str = ""
    low: int | None = None
    high: int | None = None
    default: Any = None
    choices: tuple[str, ...] = ()
    flag: str | None = None
    short: str | None = None
    flag_help: str | None = None
    attr: str | None = None  # the SubmitFlags attribute (default: the flag's name in snake case)
    convert: Convert | None = None
    required: bool = False  # a job needs it (the CRD's `required`, and the CLI's message when it is missing)
    setting: str | None = None  # the loader setting it sets (inference_pod.job.settings)

    @property
    def name(self) -> str:
        """The SubmitFlags attribute and the submit command's parameter."""
        assert self.flag is not None, self.path
        return self.attr or self.flag.split("/")[0].removeprefix("--").replace("-", "_")

    @property
    def flag_type(self) -> type:
        """What the flag takes: a duration is text (15m), the rest is the field's type."""
        return str if self.convert is Convert.SECONDS else self.type

    @property
    def option(self) -> str:
        """The flag as it appears in messages (the first of a pair)."""
        assert self.flag is not None, self.path
        return self.flag.split("/")[0]

    @property
    def description(self) -> str:
        """The CRD description: the help, then the bounds and the default."""
        text = self.help
        if self.low is not None and self.high is not None:
            text += f" Between {self.low} and {self.high}."
        if self.default is not None and "default" not in self.help.lower():
            text += f" Default {str(self.default).lower() if isinstance(self.default, bool) else self.default}."
        return text


def _loader(name: str, flag: str | None = None, *, help: str | None = None, flag_help: str | None = None,
            **extra: Any) -> SpecField:
    """A spec field that is the loader setting `name`: path, type, bounds, default and help from the table."""
    setting = settings.BY_NAME[name]
    assert setting.spec is not None, f"{name} is not settable per job"
    extra.setdefault("choices", setting.choices)
    return SpecField(
        path=setting.spec, type=setting.type, help=help or setting.help, flag=flag or setting.flag,
        low=None if setting.low is None else int(setting.low), high=None if setting.high is None else int(setting.high),
        default=setting.default, setting=name, flag_help=flag_help, **extra)


FIELDS: tuple[SpecField, ...] = (
    SpecField("input.uri", flag="--input", short="-i", flag_help="s3://bucket/prefix to OCR.", required=True),
    SpecField("output.uri", flag="--output", short="-o", required=True,
              flag_help="s3://bucket/prefix for results (not inside the input)."),
    SpecField("input.manifest", flag="--input-manifest", flag_help="s3://bucket/key of a key list: only these keys."),
    SpecField("image", flag="--image", flag_help="Inference image.", required=True),
    SpecField("imagePullPolicy", help="Image pull policy of the shard pods.", choices=PULL_POLICIES,
              flag="--image-pull-policy", flag_help="Always, IfNotPresent or Never."),
    SpecField("imagePullSecrets", list, flag="--image-pull-secret", attr="image_pull_secrets", convert=Convert.NAMES,
              flag_help="Image pull Secret (repeatable)."),
    SpecField("s3.endpoint", flag="--s3-endpoint", flag_help="S3 endpoint URL the pods use (omit for AWS)."),
    SpecField("s3.region", flag="--s3-region", flag_help="S3 region."),
    SpecField("s3.pathStyle", bool, "Path-style addressing (https://endpoint/bucket/key), needed by most "
              "S3-compatible stores.", default=True, flag="--path-style/--virtual-hosted-style",
              flag_help="S3 addressing (CRD default: path style)."),
    SpecField("s3.credentialsSecret.name", flag="--credentials-secret",
              flag_help="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the job's namespace."),
    SpecField("s3.credentialsSecret.accessKeyIdKey", help="Data key holding the access key id.",
              default="AWS_ACCESS_KEY_ID"),
    SpecField("s3.credentialsSecret.secretAccessKeyKey", help="Data key holding the secret key.",
              default="AWS_SECRET_ACCESS_KEY"),
    SpecField("sharding.shardCount", int, "Number of shards (fewer when there are fewer documents).", 1, MAX_SHARDS,
              flag="--shards", flag_help="Number of shards."),
    SpecField("sharding.targetShardSize", flag="--target-shard-size",
              flag_help="Instead of --shards: input bytes per shard, e.g. 2Gi."),
    SpecField("parallelism", int, "Most shard pods running at once.", 1, 1_000, 1, flag="--parallelism",
              flag_help="Most shard pods at once (CRD default 1)."),
    _loader("device", "--device", choices=DEVICES, help="gpu: each pod requests one nvidia.com/gpu and the loader "
            "pins it; cpu: no GPU.", flag_help="gpu (one GPU per pod; CRD default) or cpu."),
    _loader("workers_per_device", "--workers-per-pod"),
    SpecField("resources.requests", list, flag="--request", attr="requests", convert=Convert.QUANTITIES,
              flag_help="Pod resource request, e.g. cpu=4, memory=16Gi (repeatable)."),
    SpecField("resources.limits", list, flag="--limit", attr="limits", convert=Convert.QUANTITIES,
              flag_help="Pod resource limit, e.g. memory=24Gi (repeatable)."),
    SpecField("nodeSelector", list, flag="--node-selector", convert=Convert.PAIRS,
              flag_help="KEY=VALUE node label (repeatable)."),
    SpecField("priorityClassName", flag="--priority-class", flag_help="PriorityClass of the pods."),
    SpecField("serviceAccountName", flag="--service-account", flag_help="ServiceAccount of the pods."),
    SpecField("queueName", flag="--queue", flag_help="Kueue LocalQueue name."),
    _loader("det_model_name"),
    _loader("det_model_dir"),
    _loader("rec_model_name"),
    _loader("rec_model_dir"),
    _loader("engine"),
    _loader("page_batch_size"),
    _loader("rec_batch_size"),
    _loader("det_limit_side_len"),
    _loader("det_input"),
    _loader("max_pixels"),
    _loader("max_pages"),
    _loader("max_item_bytes"),
    _loader("pdf_dpi"),
    SpecField("retries.perShard", int, "Counted retries per shard.", 0, 100, 3, flag="--retries"),
    SpecField("retries.backoffSeconds", int,
              f"Delay before the first retry; doubles per retry up to {MAX_BACKOFF_SECONDS}s.", 1, 3_600, 10,
              flag="--backoff", convert=Convert.SECONDS, flag_help="First retry delay, e.g. 30s."),
    SpecField("retries.infrastructureTimeoutSeconds", int, "How long a shard may keep failing because storage is "
              "unavailable (unreachable, 5xx, throttling) before the job fails with reason StorageUnavailable. "
              f"Such failures are retried every {INFRASTRUCTURE_BACKOFF_SECONDS}s doubling to "
              f"{MAX_INFRASTRUCTURE_BACKOFF_SECONDS}s and do not spend retries.perShard; planning waits as long.",
              60, 604_800, 1_800, flag="--infrastructure-timeout", convert=Convert.SECONDS,
              flag_help="Most time a storage outage may last before the job fails."),
    SpecField("scheduling.unschedulableTimeoutSeconds", int, "How long a shard pod may stay unschedulable (no node "
              "fits its requests, nodeSelector, tolerations or affinity) before the job fails with reason "
              "Unschedulable and the scheduler's message. 0: wait forever (e.g. for a cluster autoscaler).",
              0, 604_800, 600, flag="--unschedulable-timeout", convert=Convert.SECONDS,
              flag_help="Most time a shard pod may wait for a node (0: forever)."),
    SpecField("stallTimeoutSeconds", int, "A running shard whose progress heartbeat does not advance for this long "
              "is killed and retried (counted).", 10, 86_400, 600, flag="--stall-timeout", convert=Convert.SECONDS,
              flag_help="Kill a shard without progress for this long."),
    SpecField("shardDeadlineSeconds", int, "Most seconds one shard pod may run (activeDeadlineSeconds); a pod past "
              "it is stopped and retried (counted). Unset: no deadline.", 30, 604_800, flag="--shard-deadline",
              convert=Convert.SECONDS, flag_help="Most time one shard pod may run."),
    SpecField("ttlSecondsAfterFinished", int, "Delete the OcrJob (and its pods) this many seconds after it "
              "finished. Unset: keep it.", 0, 31_536_000, flag="--ttl", convert=Convert.SECONDS,
              flag_help="Delete the job this long after it finished."),
    SpecField("suspend", bool, "true: start no new shard pods and stop the running ones (they flush and exit; "
              "finished items are kept and the shard resumes later without spending a retry). false: continue.",
              default=False, flag="--suspend", flag_help="Create it suspended (plan only)."),
    SpecField("podCleanupPolicy", help="Which finished pods are deleted when the job finishes: DeleteSucceeded "
              "(default; failed pods stay for their logs), Delete (all), Keep (none). All pods go with the OcrJob.",
              choices=CLEANUP_POLICIES, default="DeleteSucceeded", flag="--pod-cleanup-policy",
              flag_help="DeleteSucceeded, Delete or Keep."),
)
BY_PATH: dict[str, SpecField] = {f.path: f for f in FIELDS}
FLAGGED: tuple[SpecField, ...] = tuple(f for f in FIELDS if f.flag)


def default(path: str) -> Any:
    """The default the CRD gives `path` (and `parse_spec` assumes when it is absent)."""
    return BY_PATH[path].default
