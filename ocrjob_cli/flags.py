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
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

import yaml

from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_operator.api.fields import FLAGGED, Convert, SpecField, default
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


# -- flags → spec ------------------------------------------------------------------------------------------------
CONVERTERS: dict[Convert, Callable[[str, str], Any]] = {  # (value, flag) -> spec value; pairs convert each value
    Convert.SECONDS: lambda value, flag: int(parse_duration(value, flag)),
    Convert.QUANTITIES: lambda value, flag: _int_or_str(value),
    Convert.PAIRS: lambda value, flag: value,
}


def _flag_field(spec_field: SpecField) -> tuple[str, Any, Any]:
    """The SubmitFlags field of one spec field: None (or []) means "not given"."""
    metadata = {"path": spec_field.path, "flag": spec_field.option, "spec_field": spec_field}
    if spec_field.type is list:
        return spec_field.name, list[str], field(default_factory=list, metadata=metadata)
    return spec_field.name, spec_field.flag_type | None, field(default=None, metadata=metadata)


SubmitFlags = make_dataclass("SubmitFlags", [_flag_field(f) for f in FLAGGED])
SubmitFlags.__module__ = __name__
SubmitFlags.__doc__ = (
    """The spec flags of `ocrjob submit`, one per flagged field of `ocrjob_operator.api.fields`; None (or empty)
    means "not given": the file's value or the CRD's default stays. Field metadata: the spec path, the flag name
    (for messages) and the spec field (its converter).""")

# What a job cannot do without, and the flag that sets it (for the message when it is missing).
REQUIRED = tuple((f.path, f.option) for f in FLAGGED if f.required)


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


def spec_from_flags(flags: Any) -> dict[str, Any]:
    """Only the flags that were given (a SubmitFlags), as a (partial) camelCase spec."""
    spec: dict[str, Any] = {}
    for f in fields(flags):
        value = getattr(flags, f.name)
        if value is None or value == []:
            continue
        declared: SpecField = f.metadata["spec_field"]
        flag = declared.option
        if declared.convert is Convert.NAMES:
            value = [{"name": name} for name in value]
        elif declared.convert in (Convert.PAIRS, Convert.QUANTITIES):
            value = {k: CONVERTERS[declared.convert](v, flag) for k, v in parse_pairs(value, flag).items()}
        elif declared.convert is not None:
            value = CONVERTERS[declared.convert](value, flag)
        _set_path(spec, declared.path, value)
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


def build_job(flags: Any, file_job: dict[str, Any] | None = None, *, name: str | None = None,
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
    keys = [ref.get(key) or default(f"s3.credentialsSecret.{key}") for key in ("accessKeyIdKey", "secretAccessKeyKey")]
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
