"""The OcrJob spec: parsing into a typed `JobSpec`, with the bounds and defaults of `api.fields`.

The apiserver already enforces all of this through the CRD's OpenAPI schema and CEL rules; parsing
checks again because an operator must not trust that the CRD in the cluster is the current one, and
because unit tests exercise the rules without a cluster. Every error says what to change. The patterns
below are shared with the CRD generator; bounds, defaults and choices are declared in `api.fields`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ocrjob_operator.api import fields as F
from ocrjob_operator.api.names import GPU_RESOURCE

# (minimum, maximum, default or None) of every integer field: a view of `api.fields`, for `parse_spec`.
BOUNDS: dict[str, tuple[int, int, int | None]] = {
    f.path: (f.low, f.high, f.default) for f in F.FIELDS if f.type is int  # type: ignore[misc]
}
TARGET_SHARD_MIN, TARGET_SHARD_MAX = "1Mi", "1Ti"
MAX_URI = 1024

# s3://bucket/prefix: a bucket name as S3 allows it, then '/'-separated non-empty segments without
# whitespace, '?' or '#', optionally one trailing '/'.
S3_URI_RE = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/\s?#]+)*/?$"
S3_OBJECT_RE = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/\s?#]+)+$"
LOCAL_PATH_RE = r"^/[^\s]*$"
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_RE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
ENV_KEY_RE = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
HTTP_URL_RE = r"^https?://[^\s/?#]+(/[^\s]*)?$"
# A '.' or '..' path segment: S3 keys are literal (no such segment is resolved), so such a location is never
# what was meant and the output-vs-input checks could not compare it; refused with the normalised form.
DOT_SEGMENT_RE = r"/\.{1,2}(/|$)"
QUANTITY_RE = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"

URI_HINT = (
    "write it as s3://bucket/prefix (bucket: 3-63 lowercase letters, digits, '.' or '-'; "
    "no empty segments '//', spaces, '?' or '#')"
)


class SpecError(ValueError):
    """The spec is invalid; the message names the field and says how to fix it."""


@dataclass(frozen=True)
class SecretRef:
    name: str
    access_key_id_key: str = F.default("s3.credentialsSecret.accessKeyIdKey")
    secret_access_key_key: str = F.default("s3.credentialsSecret.secretAccessKeyKey")
    session_token_key: str | None = None


@dataclass(frozen=True)
class S3Spec:
    endpoint: str | None = None
    region: str | None = None
    path_style: bool = F.default("s3.pathStyle")
    credentials: SecretRef | None = None


@dataclass(frozen=True)
class ModelsSpec:
    det_name: str
    det_location: str
    rec_name: str
    rec_location: str


# The spec's ocr.* fields, by loader setting name (OcrSpec's attributes are those names).
OCR_FIELDS: dict[str, F.SpecField] = {f.setting: f for f in F.FIELDS if f.path.startswith("ocr.") and f.setting}


@dataclass(frozen=True)
class OcrSpec:
    """spec.ocr, attribute for loader setting (defaults from `inference_pod.job.settings`)."""

    engine: str = OCR_FIELDS["engine"].default
    page_batch_size: int = OCR_FIELDS["page_batch_size"].default
    rec_batch_size: int = OCR_FIELDS["rec_batch_size"].default
    det_limit_side_len: int = OCR_FIELDS["det_limit_side_len"].default
    det_input: str = OCR_FIELDS["det_input"].default
    max_pixels: int = OCR_FIELDS["max_pixels"].default
    max_pages: int = OCR_FIELDS["max_pages"].default
    max_item_bytes: int = OCR_FIELDS["max_item_bytes"].default
    pdf_dpi: int = OCR_FIELDS["pdf_dpi"].default


@dataclass(frozen=True)
class JobSpec:
    input_uri: str
    output_uri: str
    image: str
    shard_count: int | None = None
    target_shard_bytes: int | None = None
    input_manifest: str | None = None
    s3: S3Spec = field(default_factory=S3Spec)
    parallelism: int = 1
    image_pull_policy: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    models: ModelsSpec | None = None
    ocr: OcrSpec = field(default_factory=OcrSpec)
    device: str = F.default("device")
    workers_per_pod: int = F.default("workersPerPod")
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    service_account_name: str | None = None
    queue_name: str | None = None
    retries: int = F.default("retries.perShard")
    backoff_seconds: int = F.default("retries.backoffSeconds")
    stall_timeout_seconds: int = F.default("stallTimeoutSeconds")
    infrastructure_timeout_seconds: int = F.default("retries.infrastructureTimeoutSeconds")
    unschedulable_timeout_seconds: int = F.default("scheduling.unschedulableTimeoutSeconds")  # 0: forever
    shard_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    suspend: bool = F.default("suspend")
    pod_cleanup_policy: str = F.default("podCleanupPolicy")

    def loader_settings(self) -> dict[str, Any]:
        """The loader settings this spec sets (setting name -> value), for the shard pod's environment."""
        values: dict[str, Any] = {"device": self.device, "workers_per_device": self.workers_per_pod,
                                  **dataclasses.asdict(self.ocr)}
        if self.models is not None:
            values.update(det_model_name=self.models.det_name, det_model_dir=self.models.det_location,
                          rec_model_name=self.models.rec_name, rec_model_dir=self.models.rec_location)
        return values


def parse_quantity(text: str, where: str) -> int:
    """'512Mi' → 536870912, as Kubernetes quantities (binary and decimal suffixes)."""
    if not isinstance(text, str) or not re.match(QUANTITY_RE, text.strip()):
        raise SpecError(f"{where}: {text!r} is not a size; write e.g. 512Mi, 2Gi or 1000000")
    text = text.strip()
    suffixes = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50,
                "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            number, mult = text[: -len(suffix)], factor
            break
    else:
        number, mult = text, 1
    try:
        return int(Decimal(number) * mult)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
        raise SpecError(f"{where}: {text!r} is not a size") from exc


def _with_slash(uri: str) -> str:
    return uri if uri.endswith("/") else uri + "/"


def output_inside_input(input_uri: str, output_uri: str) -> bool:
    """Same rule as the CRD's CEL rule: the output equals the input or lies below it."""
    return _with_slash(output_uri).startswith(_with_slash(input_uri))


def output_contains_input(input_uri: str, output_uri: str) -> bool:
    """Same rule as the CRD's CEL rule: the input lies below the output (results would land inside the input:
    the result of <in>/<sub>/x.png is <out>/<sub-relative key>.json, which may be below the input)."""
    return _with_slash(input_uri).startswith(_with_slash(output_uri))


def dot_segment_fix(uri: str) -> str | None:
    """None when `uri` has no '.' or '..' segment; else the message that says what to write instead."""
    if not re.search(DOT_SEGMENT_RE, uri):
        return None
    scheme, _, rest = uri.partition("://")
    bucket, _, path = rest.partition("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    fixed = f"{scheme}://{bucket}" + ("/" + "/".join(parts) if parts else "")
    return (f"{uri!r} has a '.' or '..' segment; S3 keys are literal, so write the location without them, e.g. "
            f"{fixed!r}")


class _Reader:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def get(self, path: str, default: Any = None) -> Any:
        node: Any = self.spec
        for part in path.split("."):
            if not isinstance(node, dict) or node.get(part) is None:
                return default
            node = node[part]
        return node

    def integer(self, path: str) -> int | None:
        low, high, default = BOUNDS[path]
        value = self.get(path, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"spec.{path}: {value!r} is not an integer; give a whole number in [{low}, {high}]")
        if not low <= value <= high:
            raise SpecError(f"spec.{path}: {value} is out of range; give a value between {low} and {high}")
        return value

    def string(self, path: str, pattern: str | None = None, hint: str = "", required: bool = False) -> str | None:
        value = self.get(path)
        if value is None or value == "":
            if required:
                raise SpecError(f"spec.{path} is required{': ' + hint if hint else ''}")
            return None
        if not isinstance(value, str):
            raise SpecError(f"spec.{path}: {value!r} is not a string")
        if pattern and not re.match(pattern, value):
            raise SpecError(f"spec.{path}: {value!r} is not valid; {hint}")
        return value

    def choice(self, path: str) -> Any:
        """One of the field's choices, its default when absent; None when it has no default and is absent or ''."""
        declared = F.BY_PATH[path]
        value = self.get(path, declared.default)
        if value is None or (value == "" and declared.default is None):
            return None
        if value not in declared.choices:
            raise SpecError(f"spec.{path}: {value!r} is not allowed; use one of {', '.join(declared.choices)}")
        return value


def _secret_ref(reader: _Reader) -> SecretRef | None:
    if reader.get("s3.credentialsSecret") is None:
        return None
    name = reader.string("s3.credentialsSecret.name", DNS_SUBDOMAIN_RE,
                         "give the name of a Secret in the job's namespace", required=True)
    keys = {}
    for field_name, attr in (("accessKeyIdKey", "access_key_id_key"), ("secretAccessKeyKey", "secret_access_key_key"),
                             ("sessionTokenKey", "session_token_key")):
        value = reader.string(f"s3.credentialsSecret.{field_name}", ENV_KEY_RE, "use a Secret data key name")
        if value is not None:
            keys[attr] = value
    assert name is not None
    return SecretRef(name=name, **keys)


def _models(reader: _Reader) -> ModelsSpec | None:
    det, rec = reader.get("models.detection"), reader.get("models.recognition")
    if det is None and rec is None:
        return None
    if det is None or rec is None:
        raise SpecError("spec.models: give both detection and recognition, or neither to use the image's bundled "
                        "PP-OCRv4 mobile models")
    location_hint = "give an absolute directory in the image or an s3://bucket/prefix"
    values = []
    for kind in ("detection", "recognition"):
        values.append(reader.string(f"models.{kind}.name", r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                    "use the PaddleOCR model name, e.g. PP-OCRv4_mobile_det", required=True))
        location = reader.string(f"models.{kind}.location", None, location_hint, required=True)
        assert location is not None
        if not (re.match(LOCAL_PATH_RE, location) or re.match(S3_URI_RE, location)):
            raise SpecError(f"spec.models.{kind}.location: {location!r} is not valid; {location_hint}")
        values.append(location)
    return ModelsSpec(*values)  # type: ignore[arg-type]


def parse_spec(spec: dict[str, Any]) -> JobSpec:
    """Validate and type an OcrJob spec (camelCase, as in the CR). Raises SpecError with a fix."""
    if not isinstance(spec, dict):
        raise SpecError("spec is missing: an OcrJob needs spec.input, spec.output, spec.image and spec.sharding")
    r = _Reader(spec)
    input_uri = r.string("input.uri", S3_URI_RE, URI_HINT, required=True)
    output_uri = r.string("output.uri", S3_URI_RE, URI_HINT, required=True)
    assert input_uri is not None and output_uri is not None
    for path, uri in (("input.uri", input_uri), ("output.uri", output_uri)):
        fix = dot_segment_fix(uri)
        if fix:
            raise SpecError(f"spec.{path}: {fix}")
    if output_inside_input(input_uri, output_uri):
        raise SpecError(f"spec.output.uri {output_uri!r} lies inside spec.input.uri {input_uri!r}: results would be "
                        "OCR'd on the next run; choose an output outside the input, e.g. a sibling prefix")
    if output_contains_input(input_uri, output_uri):
        raise SpecError(f"spec.output.uri {output_uri!r} contains spec.input.uri {input_uri!r}: results would be "
                        "written inside the input (possibly over input objects); choose an output outside the input, "
                        "e.g. a sibling prefix")
    manifest = r.string("input.manifest", S3_OBJECT_RE, "give the s3://bucket/key of a key list (JSON or lines)")
    if manifest and dot_segment_fix(manifest):
        raise SpecError(f"spec.input.manifest: {dot_segment_fix(manifest)}")
    image = r.string("image", r"^\S+$", "give the inference image, e.g. registry/ocrjob-inference:0.1.0",
                     required=True)
    shard_count = r.integer("sharding.shardCount")
    target = r.get("sharding.targetShardSize")
    if (shard_count is None) == (target is None):
        raise SpecError("spec.sharding: set exactly one of shardCount (a number of shards) or targetShardSize "
                        "(bytes per shard, e.g. 2Gi)")
    target_bytes = None
    if target is not None:
        target_bytes = parse_quantity(str(target), "spec.sharding.targetShardSize")
        low, high = parse_quantity(TARGET_SHARD_MIN, ""), parse_quantity(TARGET_SHARD_MAX, "")
        if not low <= target_bytes <= high:
            raise SpecError(f"spec.sharding.targetShardSize: {target} is out of range; give a size between "
                            f"{TARGET_SHARD_MIN} and {TARGET_SHARD_MAX}")
    resources = r.get("resources", {}) or {}
    for kind in ("limits", "requests"):
        if GPU_RESOURCE in (resources.get(kind) or {}):
            raise SpecError(f"spec.resources.{kind}: remove {GPU_RESOURCE}; the operator requests exactly one GPU "
                            "per pod when spec.device is gpu")
    s3 = S3Spec(
        endpoint=r.string("s3.endpoint", HTTP_URL_RE, "give an http(s)://host[:port] URL"),
        region=r.string("s3.region", r"^[a-z0-9-]+$", "give a region name, e.g. us-east-1"),
        path_style=bool(r.get("s3.pathStyle", F.default("s3.pathStyle"))),
        credentials=_secret_ref(r),
    )
    pull_secrets = tuple(ref.get("name", "") for ref in r.get("imagePullSecrets", []) or [])
    if any(not re.match(DNS_SUBDOMAIN_RE, name) for name in pull_secrets):
        raise SpecError(f"spec.imagePullSecrets: {list(pull_secrets)} must all be Secret names")
    return JobSpec(
        input_uri=input_uri,
        output_uri=output_uri,
        image=image,  # type: ignore[arg-type]
        shard_count=shard_count,
        target_shard_bytes=target_bytes,
        input_manifest=manifest,
        s3=s3,
        parallelism=r.integer("parallelism"),  # type: ignore[arg-type]
        image_pull_policy=r.choice("imagePullPolicy"),
        image_pull_secrets=pull_secrets,
        models=_models(r),
        ocr=OcrSpec(**{name: r.choice(f.path) if f.choices else r.integer(f.path)  # type: ignore[arg-type]
                       for name, f in OCR_FIELDS.items()}),
        device=r.choice("device"),
        workers_per_pod=r.integer("workersPerPod"),  # type: ignore[arg-type]
        resources={k: dict(v) for k, v in resources.items() if v},
        node_selector=dict(r.get("nodeSelector", {}) or {}),
        tolerations=tuple(r.get("tolerations", []) or []),
        affinity=r.get("affinity"),
        priority_class_name=r.string("priorityClassName", DNS_SUBDOMAIN_RE, "give a PriorityClass name"),
        service_account_name=r.string("serviceAccountName", DNS_SUBDOMAIN_RE, "give a ServiceAccount name"),
        queue_name=r.string("queueName", LABEL_VALUE_RE, "give a Kueue LocalQueue name (a label value)"),
        retries=r.integer("retries.perShard"),  # type: ignore[arg-type]
        backoff_seconds=r.integer("retries.backoffSeconds"),  # type: ignore[arg-type]
        stall_timeout_seconds=r.integer("stallTimeoutSeconds"),  # type: ignore[arg-type]
        infrastructure_timeout_seconds=r.integer("retries.infrastructureTimeoutSeconds"),  # type: ignore[arg-type]
        unschedulable_timeout_seconds=r.integer("scheduling.unschedulableTimeoutSeconds"),  # type: ignore[arg-type]
        shard_deadline_seconds=r.integer("shardDeadlineSeconds"),
        ttl_seconds_after_finished=r.integer("ttlSecondsAfterFinished"),
        suspend=bool(r.get("suspend", F.default("suspend"))),
        pod_cleanup_policy=r.choice("podCleanupPolicy"),
    )
