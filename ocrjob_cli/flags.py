"""Building OcrJob objects for `ocrjob submit` and `ocrjob retry` — pure functions, no cluster.

`submit` starts from an `-f` file (or nothing), lays the flags the user gave over it (a flag always wins),
then `--set spec.path=value`. Nothing is defaulted here that the CRD defaults itself, and nothing is
validated that the apiserver validates: the cluster's CRD is the authority, and its messages are shown
as they are. Only what the apiserver cannot say in terms of flags is checked here (a missing --input).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_operator.api.names import API_VERSION, GROUP, KIND, MAX_JOB_NAME

# Links between a retry job and its original (labels can be selected on; annotations carry the details).
LABEL_RETRY_OF = f"{GROUP}/retry-of"  # the original's name: `ocrjob list -l ocrjob.dev/retry-of=NAME`
ANNOTATION_RETRY_OF = f"{GROUP}/retry-of"  # namespace/name of the original
ANNOTATION_RETRY_OF_UID = f"{GROUP}/retry-of-uid"
ANNOTATION_RETRY_ITEMS = f"{GROUP}/retry-items"  # how many keys the retry's input manifest lists
GENERATE_SUFFIX = 5  # characters the apiserver appends to metadata.generateName
DEFAULT_GENERATE_NAME = "ocrjob-"


def usage(message: str) -> CliError:
    return CliError(ExitCode.USAGE, message)


# -- small parsers -----------------------------------------------------------------------------------------------
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str, flag: str = "--timeout") -> float:
    """'90' or '90s', '15m', '2h', '1h30m', '1d' → seconds."""
    match = _DURATION.match(text.strip().lower()) if text and text.strip() else None
    if not match or not any(match.groups()):
        raise usage(f"{flag} {text!r} is not a duration: write e.g. 90s, 15m, 2h or 1h30m")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """['a=1', 'b=2'] → {'a': '1', 'b': '2'}."""
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise usage(f"{flag} {value!r}: write KEY=VALUE")
        pairs[key.strip()] = val
    return pairs


def _int_or_str(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _seconds(flag: str) -> Callable[[str], int]:
    def convert(value: str) -> int:
        return int(parse_duration(value, flag))
    return convert


# -- flags → spec ------------------------------------------------------------------------------------------------
@dataclass
class SubmitFlags:
    """The spec flags of `ocrjob submit`; None (or empty) means "not given": the file's value or the CRD's default
    stays. Field metadata: the spec path, the flag name (for messages), and a converter."""

    input: str | None = field(default=None, metadata={"path": "input.uri", "flag": "--input"})
    input_manifest: str | None = field(default=None, metadata={"path": "input.manifest", "flag": "--input-manifest"})
    output: str | None = field(default=None, metadata={"path": "output.uri", "flag": "--output"})
    image: str | None = field(default=None, metadata={"path": "image", "flag": "--image"})
    image_pull_policy: str | None = field(default=None, metadata={"path": "imagePullPolicy",
                                                                  "flag": "--image-pull-policy"})
    image_pull_secrets: list[str] = field(default_factory=list, metadata={
        "path": "imagePullSecrets", "flag": "--image-pull-secret", "convert": lambda v: [{"name": n} for n in v]})
    s3_endpoint: str | None = field(default=None, metadata={"path": "s3.endpoint", "flag": "--s3-endpoint"})
    s3_region: str | None = field(default=None, metadata={"path": "s3.region", "flag": "--s3-region"})
    path_style: bool | None = field(default=None, metadata={"path": "s3.pathStyle", "flag": "--path-style"})
    credentials_secret: str | None = field(default=None, metadata={"path": "s3.credentialsSecret.name",
                                                                   "flag": "--credentials-secret"})
    shards: int | None = field(default=None, metadata={"path": "sharding.shardCount", "flag": "--shards"})
    target_shard_size: str | None = field(default=None, metadata={"path": "sharding.targetShardSize",
                                                                  "flag": "--target-shard-size"})
    parallelism: int | None = field(default=None, metadata={"path": "parallelism", "flag": "--parallelism"})
    device: str | None = field(default=None, metadata={"path": "device", "flag": "--device"})
    workers_per_pod: int | None = field(default=None, metadata={"path": "workersPerPod", "flag": "--workers-per-pod"})
    requests: list[str] = field(default_factory=list, metadata={
        "path": "resources.requests", "flag": "--request", "pairs": True, "convert": _int_or_str})
    limits: list[str] = field(default_factory=list, metadata={
        "path": "resources.limits", "flag": "--limit", "pairs": True, "convert": _int_or_str})
    node_selector: list[str] = field(default_factory=list, metadata={"path": "nodeSelector",
                                                                     "flag": "--node-selector", "pairs": True})
    priority_class: str | None = field(default=None, metadata={"path": "priorityClassName",
                                                               "flag": "--priority-class"})
    service_account: str | None = field(default=None, metadata={"path": "serviceAccountName",
                                                                "flag": "--service-account"})
    queue: str | None = field(default=None, metadata={"path": "queueName", "flag": "--queue"})
    det_model_name: str | None = field(default=None, metadata={"path": "models.detection.name",
                                                               "flag": "--det-model-name"})
    det_model_dir: str | None = field(default=None, metadata={"path": "models.detection.location",
                                                              "flag": "--det-model-dir"})
    rec_model_name: str | None = field(default=None, metadata={"path": "models.recognition.name",
                                                               "flag": "--rec-model-name"})
    rec_model_dir: str | None = field(default=None, metadata={"path": "models.recognition.location",
                                                              "flag": "--rec-model-dir"})
    page_batch_size: int | None = field(default=None, metadata={"path": "ocr.pageBatchSize",
                                                                "flag": "--page-batch-size"})
    rec_batch_size: int | None = field(default=None, metadata={"path": "ocr.recBatchSize", "flag": "--rec-batch-size"})
    det_limit_side_len: int | None = field(default=None, metadata={"path": "ocr.detLimitSideLen",
                                                                   "flag": "--det-limit-side-len"})
    max_pixels: int | None = field(default=None, metadata={"path": "ocr.maxPixels", "flag": "--max-pixels"})
    max_pages: int | None = field(default=None, metadata={"path": "ocr.maxPages", "flag": "--max-pages"})
    max_item_bytes: int | None = field(default=None, metadata={"path": "ocr.maxItemBytes", "flag": "--max-item-bytes"})
    pdf_dpi: int | None = field(default=None, metadata={"path": "ocr.pdfDpi", "flag": "--pdf-dpi"})
    retries: int | None = field(default=None, metadata={"path": "retries.perShard", "flag": "--retries"})
    backoff: str | None = field(default=None, metadata={"path": "retries.backoffSeconds", "flag": "--backoff",
                                                        "convert": _seconds("--backoff")})
    stall_timeout: str | None = field(default=None, metadata={"path": "stallTimeoutSeconds", "flag": "--stall-timeout",
                                                              "convert": _seconds("--stall-timeout")})
    shard_deadline: str | None = field(default=None, metadata={"path": "shardDeadlineSeconds",
                                                               "flag": "--shard-deadline",
                                                               "convert": _seconds("--shard-deadline")})
    ttl: str | None = field(default=None, metadata={"path": "ttlSecondsAfterFinished", "flag": "--ttl",
                                                    "convert": _seconds("--ttl")})
    suspend: bool | None = field(default=None, metadata={"path": "suspend", "flag": "--suspend"})
    pod_cleanup_policy: str | None = field(default=None, metadata={"path": "podCleanupPolicy",
                                                                   "flag": "--pod-cleanup-policy"})


# What a job cannot do without, and the flag that sets it (for the message when it is missing).
REQUIRED = (("input.uri", "--input"), ("output.uri", "--output"), ("image", "--image"))


def _set_path(node: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _get_path(node: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def spec_from_flags(flags: SubmitFlags) -> dict[str, Any]:
    """Only the flags that were given, as a (partial) camelCase spec."""
    spec: dict[str, Any] = {}
    for f in fields(flags):
        value = getattr(flags, f.name)
        if value is None or value == []:
            continue
        convert = f.metadata.get("convert")
        if f.metadata.get("pairs"):
            value = {k: convert(v) if convert else v for k, v in parse_pairs(value, f.metadata["flag"]).items()}
        elif convert:
            value = convert(value)
        _set_path(spec, f.metadata["path"], value)
    return spec


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two specs: overlay wins; maps merge; everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_sets(spec: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """`--set ocr.pdfDpi=200` / `--set spec.tolerations='[{operator: Exists}]'`: the value is read as YAML."""
    spec = copy.deepcopy(spec)
    for item in sets or []:
        path, sep, raw = item.partition("=")
        path = path.strip().removeprefix("spec.")
        if not sep or not path or not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", path):
            raise usage(f"--set {item!r}: write PATH=VALUE with a dotted spec path, e.g. --set ocr.pdfDpi=200")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise usage(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
        _set_path(spec, path, value)
    return spec


# -- files -------------------------------------------------------------------------------------------------------
@dataclass
class FileJob:
    job: dict[str, Any]
    ignored: list[str]  # other objects in the file ("Secret scans-s3"), for a note


def parse_job_file(text: str, source: str) -> FileJob:
    """The one OcrJob in a YAML/JSON file (other objects, e.g. the sample's Secret, are reported and skipped)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise usage(f"{source} is not valid YAML: {exc}") from exc
    jobs, ignored = [], []
    for doc in docs:
        if not isinstance(doc, dict):
            raise usage(f"{source}: every document must be a mapping (an object with apiVersion, kind, ...)")
        if doc.get("kind") == KIND:
            jobs.append(doc)
        else:
            ignored.append(f"{doc.get('kind', '?')} {(doc.get('metadata') or {}).get('name', '?')}")
    if len(jobs) != 1:
        raise usage(f"{source} holds {len(jobs)} OcrJob objects: give a file with exactly one "
                    f"(apiVersion: {API_VERSION}, kind: {KIND})")
    job = jobs[0]
    if (job.get("apiVersion") or API_VERSION).split("/")[0] != GROUP:
        raise usage(f"{source}: apiVersion {job.get('apiVersion')!r} is not {API_VERSION}")
    return FileJob(job, ignored)


# -- the whole object --------------------------------------------------------------------------------------------
def generate_prefix(prefix: str) -> str:
    """A metadata.generateName that keeps the final name within MAX_JOB_NAME (the apiserver adds 5 characters)."""
    prefix = prefix[: MAX_JOB_NAME - GENERATE_SUFFIX]
    return prefix if prefix.endswith("-") else prefix[: MAX_JOB_NAME - GENERATE_SUFFIX - 1] + "-"


def build_job(flags: SubmitFlags, file_job: dict[str, Any] | None = None, *, name: str | None = None,
              generate_name: str | None = None, namespace: str | None = None, labels: list[str] | None = None,
              annotations: list[str] | None = None, sets: list[str] | None = None) -> dict[str, Any]:
    """The OcrJob to create: the file's object (if any), the flags over it, then `--set`."""
    base = copy.deepcopy(file_job) if file_job else {}
    meta = dict(base.get("metadata") or {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink"):
        meta.pop(key, None)  # a file saved from the cluster (`ocrjob status -o yaml`) must create a new object
    spec = merge(base.get("spec") or {}, spec_from_flags(flags))
    if flags.shards is not None:  # sharding is one-of: the flag replaces the file's choice
        spec["sharding"].pop("targetShardSize", None)
    if flags.target_shard_size is not None:
        spec["sharding"].pop("shardCount", None)
    spec = apply_sets(spec, sets)
    missing = [flag for path, flag in REQUIRED if not _get_path(spec, path)]
    if not _get_path(spec, "sharding"):
        missing.append("--shards or --target-shard-size")
    if missing:
        raise usage(f"missing {', '.join(missing)}: give them as flags or in the -f file's spec")
    if name:
        meta["name"] = name
        meta.pop("generateName", None)
    elif generate_name:
        meta.pop("name", None)
        meta["generateName"] = generate_prefix(generate_name)
    elif not meta.get("name") and not meta.get("generateName"):
        meta["generateName"] = DEFAULT_GENERATE_NAME
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = {**(meta.get("labels") or {}), **parse_pairs(labels, "--label")}
    if annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **parse_pairs(annotations, "--annotation")}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}


def secret_requirements(spec: dict[str, Any]) -> tuple[str, list[str]] | None:
    """(Secret name, data keys it must hold) for the job's S3 credentials, or None when it names no Secret."""
    ref = _get_path(spec, "s3.credentialsSecret")
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    keys = [ref.get("accessKeyIdKey") or "AWS_ACCESS_KEY_ID", ref.get("secretAccessKeyKey") or "AWS_SECRET_ACCESS_KEY"]
    if ref.get("sessionTokenKey"):
        keys.append(ref["sessionTokenKey"])
    return ref["name"], keys


# -- retry -------------------------------------------------------------------------------------------------------
def retry_manifest_uri(output_uri: str, original_uid: str, now: dt.datetime | None = None,
                       token: str | None = None) -> str:
    """Where a retry's key list goes: next to the original's plan, so the original's bookkeeping explains it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    token = token or secrets.token_hex(3)
    return f"{output_uri.rstrip('/')}/_ocrjob/{original_uid}/retries/{now.strftime('%Y%m%dT%H%M%SZ')}-{token}.json"


def retry_manifest(keys: list[str], original: dict[str, Any]) -> bytes:
    meta = original["metadata"]
    doc = {"keys": sorted(keys), "retry_of": {"namespace": meta.get("namespace"), "name": meta["name"],
                                              "uid": meta.get("uid")}}
    return json.dumps(doc, indent=1).encode()


def retry_job(original: dict[str, Any], manifest_uri: str, item_count: int, name: str | None = None) -> dict[str, Any]:
    """A new OcrJob with the original's spec over only the keys in `manifest_uri`, linked to the original."""
    meta = original["metadata"]
    spec = copy.deepcopy(original.get("spec") or {})
    spec.setdefault("input", {})["manifest"] = manifest_uri
    spec["suspend"] = False
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith(f"{GROUP}/")}
    labels[LABEL_RETRY_OF] = meta["name"]
    new_meta: dict[str, Any] = {
        "namespace": meta.get("namespace"),
        "labels": labels,
        "annotations": {ANNOTATION_RETRY_OF: f"{meta.get('namespace')}/{meta['name']}",
                        ANNOTATION_RETRY_OF_UID: meta.get("uid", ""), ANNOTATION_RETRY_ITEMS: str(item_count)},
    }
    if name:
        new_meta["name"] = name
    else:
        stem = re.sub(r"-retry-[a-z0-9]{5}$", "", meta["name"])  # a retry of a retry is named after the first
        new_meta["generateName"] = generate_prefix(f"{stem[: MAX_JOB_NAME - GENERATE_SUFFIX - 7]}-retry-")
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": new_meta, "spec": spec}
