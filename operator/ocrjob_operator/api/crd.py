"""The OcrJob CustomResourceDefinition, generated from the API's declarations: the field table (`api.fields`:
descriptions, bounds, defaults, choices), the phases and conditions (`api.phases`) and the names.

`python -m ocrjob_operator.api.crd > crds/ocrjob.yaml` regenerates the checked-in file; a unit test fails
when the two differ. Every field carries a description (for `kubectl explain`); admission-time checks
are OpenAPI bounds plus CEL rules, each CEL rule with a message that says how to fix the object.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from ocrjob_operator.api import fields as F
from ocrjob_operator.api import spec as S
from ocrjob_operator.api.names import (
    CRD_NAME,
    GPU_RESOURCE,
    GROUP,
    KIND,
    MAX_JOB_NAME,
    PLURAL,
    POD_NAME_SHAPE,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from ocrjob_operator.api.phases import ConditionType, Phase

Schema = dict[str, Any]


def _rule(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"rule": rule, "message": message, **extra}


def obj(description: str, properties: dict[str, Schema], required: list[str] | None = None,
        rules: list[dict[str, Any]] | None = None, **extra: Any) -> Schema:
    node: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        node["required"] = required
    if rules:
        node["x-kubernetes-validations"] = rules
    node.update(extra)
    return node


def string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def s3_uri(description: str, *, object_key: bool = False) -> Schema:
    pattern, hint = (S.S3_OBJECT_RE, "must be the s3://bucket/key of one object") if object_key else (
        S.S3_URI_RE, "must be an S3 location")
    return string(description, maxLength=S.MAX_URI, **{"x-kubernetes-validations": [
        _rule(f"self.matches(r'{pattern}')", f"{hint}: {S.URI_HINT}"),
        _rule(f"!self.matches(r'{S.DOT_SEGMENT_RE}')", "must not have '.' or '..' segments: S3 keys are literal; "
              "write the location without them, e.g. s3://bucket/a/c for s3://bucket/a/b/../c"),
    ]})


def integer(path: str) -> Schema:
    """An integer field of the table: its bounds, default and description."""
    declared = F.BY_PATH[path]
    node: Schema = {"type": "integer", "format": "int64", "minimum": declared.low, "maximum": declared.high,
                    "description": declared.description}
    if declared.default is not None:
        node["default"] = declared.default
    return node


def choice(path: str) -> Schema:
    """A string field of the table with a fixed set of values."""
    declared = F.BY_PATH[path]
    node = string(declared.description, enum=list(declared.choices))
    if declared.default is not None:
        node["default"] = declared.default
    return node


def described(path: str, **extra: Any) -> Schema:
    """A string field of the table with a default."""
    declared = F.BY_PATH[path]
    return string(declared.description, default=declared.default, **extra)


def boolean(path: str) -> Schema:
    declared = F.BY_PATH[path]
    return {"type": "boolean", "default": declared.default, "description": declared.description}


def string_map(description: str) -> Schema:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


def quantity_map(description: str) -> Schema:
    return {"type": "object", "description": description,
            "additionalProperties": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"},
                                                                                   {"type": "string"}],
                                     "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                                                r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}}


def _spec_schema() -> Schema:
    model = lambda kind, example: obj(  # noqa: E731
        f"The {kind} model.",
        {"name": string(f"PaddleOCR model name, e.g. {example}.", maxLength=128,
                        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
         "location": string("Model directory: an absolute path inside the image, or an s3://bucket/prefix "
                            "downloaded by each pod with the job's S3 credentials.", maxLength=S.MAX_URI,
                            **{"x-kubernetes-validations": [_rule(
                                f"self.matches(r'{S.LOCAL_PATH_RE}') || self.matches(r'{S.S3_URI_RE}')",
                                "must be an absolute directory in the image (/models/det) or an "
                                "s3://bucket/prefix")]})},
        required=["name", "location"])
    toleration = obj("A toleration, as in a Pod spec.", {
        "key": string("Taint key the toleration applies to; empty matches all keys (with operator Exists)."),
        "operator": string("Exists or Equal (default Equal).", enum=["Exists", "Equal"]),
        "value": string("Taint value the toleration matches (operator Equal)."),
        "effect": string("Taint effect to match: NoSchedule, PreferNoSchedule or NoExecute; empty matches all.",
                         enum=["", "NoSchedule", "PreferNoSchedule", "NoExecute"]),
        "tolerationSeconds": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 31_536_000,
                              "description": "For NoExecute: how long the pod stays bound after the taint appears. "
                                             "Between 0 and 31536000."},
    })
    return obj(
        "What to OCR, where the results go, and how the shard pods run.",
        {
            "input": obj("The documents to OCR.", {
                "uri": s3_uri("S3 prefix holding the documents (png, jpg, jpeg, bmp, tif, tiff, webp, pdf), "
                              "e.g. s3://bucket/scans/2024. Listed once, when the job is planned. Immutable once "
                              "planned."),
                "manifest": s3_uri("Optional s3://bucket/key of a key list (a JSON list, {\"keys\": [...]}, or one "
                                   "key per line), relative to uri: only these keys are OCR'd. Use it to re-run "
                                   "the failed items of an earlier job.", object_key=True),
            }, required=["uri"]),
            "output": obj("Where results go: <uri>/<key>.json per input, and <uri>/_ocrjob/<job uid>/ for the "
                          "plan, progress and the job summary.", {
                "uri": s3_uri("S3 prefix for results; must not lie inside spec.input.uri. Immutable once planned."),
            }, required=["uri"]),
            "s3": obj("How the operator and the shard pods reach S3.", {
                "endpoint": string("S3 endpoint URL for S3-compatible stores (MinIO, SeaweedFS, Ceph); omit for "
                                   "AWS.", maxLength=S.MAX_URI, pattern=S.HTTP_URL_RE),
                "region": string("S3 region, e.g. us-east-1.", maxLength=64, pattern=r"^[a-z0-9-]+$"),
                "pathStyle": boolean("s3.pathStyle"),
                "credentialsSecret": obj(
                    "A Secret in the job's namespace with the S3 access key. The shard pods get it as environment "
                    "variables (secretKeyRef) and the operator reads it to plan and to follow progress. Omit it to "
                    "use ambient credentials (workload identity) in the operator and the pods.", {
                        "name": string("Secret name.", maxLength=253, pattern=S.DNS_SUBDOMAIN_RE),
                        "accessKeyIdKey": described("s3.credentialsSecret.accessKeyIdKey", pattern=S.ENV_KEY_RE,
                                                    maxLength=253),
                        "secretAccessKeyKey": described("s3.credentialsSecret.secretAccessKeyKey",
                                                        pattern=S.ENV_KEY_RE, maxLength=253),
                        "sessionTokenKey": string("Optional data key holding a session token.",
                                                  pattern=S.ENV_KEY_RE, maxLength=253),
                    }, required=["name"]),
            }),
            "sharding": obj("How the input is split: exactly one of shardCount or targetShardSize. Shards are "
                            "balanced by bytes and planned once.", {
                "shardCount": integer("sharding.shardCount"),
                "targetShardSize": string(
                    f"Bytes of input per shard as a quantity, e.g. 2Gi; between {S.TARGET_SHARD_MIN} and "
                    f"{S.TARGET_SHARD_MAX}.", maxLength=32, **{"x-kubernetes-validations": [_rule(
                        f"self.matches(r'{S.QUANTITY_RE}') && quantity(self).compareTo(quantity("
                        f"'{S.TARGET_SHARD_MIN}')) >= 0 && quantity(self).compareTo(quantity('{S.TARGET_SHARD_MAX}'))"
                        " <= 0",
                        f"must be a size between {S.TARGET_SHARD_MIN} and {S.TARGET_SHARD_MAX}, e.g. 512Mi or 2Gi")]}),
            }, rules=[_rule("has(self.shardCount) != has(self.targetShardSize)",
                            "set exactly one of shardCount (a number of shards) or targetShardSize (e.g. 2Gi)")]),
            "parallelism": integer("parallelism"),
            "image": string("The inference image (runs `python -m inference_pod`), e.g. "
                            "registry.example.com/ocrjob-inference-gpu:0.1.0.", minLength=1, maxLength=512,
                            pattern=r"^\S+$"),
            "imagePullPolicy": choice("imagePullPolicy"),
            "imagePullSecrets": {"type": "array", "maxItems": 16, "description": "Secrets for pulling the image.",
                                 "items": obj("A Secret reference.", {"name": string("Secret name.")},
                                              required=["name"])},
            "models": obj("OCR models. Omit to use the PP-OCRv4 mobile models bundled in the image; otherwise give "
                          "both.", {"detection": model("text detection", "PP-OCRv4_mobile_det"),
                                    "recognition": model("text recognition", "PP-OCRv4_mobile_rec")},
                          rules=[_rule("has(self.detection) == has(self.recognition)",
                                       "give both models.detection and models.recognition, or neither to use the "
                                       "image's bundled models")]),
            "ocr": obj("OCR options passed to every shard pod.", {
                "engine": choice("ocr.engine"),
                "pageBatchSize": integer("ocr.pageBatchSize"),
                "recBatchSize": integer("ocr.recBatchSize"),
                "detLimitSideLen": integer("ocr.detLimitSideLen"),
                "detInput": choice("ocr.detInput"),
                "maxPixels": integer("ocr.maxPixels"),
                "maxPages": integer("ocr.maxPages"),
                "maxItemBytes": integer("ocr.maxItemBytes"),
                "pdfDpi": integer("ocr.pdfDpi"),
            }),
            "device": choice("device"),
            "workersPerPod": integer("workersPerPod"),
            "resources": obj(f"CPU/memory requests and limits of each shard pod. Do not set {GPU_RESOURCE}: it is "
                             "set from spec.device.", {
                                 "requests": quantity_map("Minimum resources, e.g. cpu: 4, memory: 16Gi."),
                                 "limits": quantity_map("Maximum resources, e.g. memory: 24Gi."),
                             }, rules=[_rule(
                                 f"!has(self.limits) || !('{GPU_RESOURCE}' in self.limits)",
                                 f"remove {GPU_RESOURCE} from resources.limits: the operator requests exactly one GPU "
                                 "per pod when spec.device is gpu"), _rule(
                                 f"!has(self.requests) || !('{GPU_RESOURCE}' in self.requests)",
                                 f"remove {GPU_RESOURCE} from resources.requests: the operator requests exactly one "
                                 "GPU per pod when spec.device is gpu")]),
            "nodeSelector": string_map("Node labels the shard pods must match, e.g. nvidia.com/gpu.product."),
            "tolerations": {"type": "array", "maxItems": 64, "items": toleration,
                            "description": "Tolerations of the shard pods (a toleration for the nvidia.com/gpu "
                                           "taint is added when device is gpu)."},
            "affinity": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                         "description": "Pod affinity/anti-affinity/node affinity of the shard pods, as in a Pod "
                                        "spec."},
            "priorityClassName": string("PriorityClass of the shard pods.", maxLength=253,
                                        pattern=S.DNS_SUBDOMAIN_RE),
            "serviceAccountName": string("ServiceAccount of the shard pods (e.g. one bound to a cloud role for "
                                         "workload identity). The pods do not call the Kubernetes API.",
                                         maxLength=253, pattern=S.DNS_SUBDOMAIN_RE),
            "queueName": string("Kueue LocalQueue: set as the kueue.x-k8s.io/queue-name label on every shard pod.",
                                maxLength=63, pattern=S.LABEL_VALUE_RE),
            "retries": obj("Retries of failed shards. Evictions, preemptions, node loss and interruptions do not "
                           "count; invalid input and configuration errors are not retried.", {
                "perShard": integer("retries.perShard"),
                "backoffSeconds": integer("retries.backoffSeconds"),
                "infrastructureTimeoutSeconds": integer("retries.infrastructureTimeoutSeconds"),
            }),
            "scheduling": obj("How long shard pods may wait for a node.", {
                "unschedulableTimeoutSeconds": integer("scheduling.unschedulableTimeoutSeconds"),
            }),
            "stallTimeoutSeconds": integer("stallTimeoutSeconds"),
            "shardDeadlineSeconds": integer("shardDeadlineSeconds"),
            "ttlSecondsAfterFinished": integer("ttlSecondsAfterFinished"),
            "suspend": boolean("suspend"),
            "podCleanupPolicy": choice("podCleanupPolicy"),
        },
        required=["input", "output", "image", "sharding"],
        rules=[_rule(
            "!((self.output.uri.endsWith('/') ? self.output.uri : self.output.uri + '/').startsWith("
            "self.input.uri.endsWith('/') ? self.input.uri : self.input.uri + '/'))",
            "spec.output.uri must not be spec.input.uri or lie inside it (results would be OCR'd on the next run): "
            "choose a sibling prefix, e.g. s3://bucket/results for input s3://bucket/scans",
            fieldPath=".output.uri"), _rule(
            "!((self.input.uri.endsWith('/') ? self.input.uri : self.input.uri + '/').startsWith("
            "self.output.uri.endsWith('/') ? self.output.uri : self.output.uri + '/'))",
            "spec.output.uri must not contain spec.input.uri (results would be written inside the input, possibly "
            "over input objects): choose a sibling prefix, e.g. s3://bucket/results for input s3://bucket/scans",
            fieldPath=".output.uri")],
    )


def _status_schema() -> Schema:
    count = lambda d: {"type": "integer", "format": "int64", "description": d}  # noqa: E731
    time = lambda d: string(d, format="date-time")  # noqa: E731
    condition = obj(f"A condition: {ConditionType.listing()}.", {
        "type": string("Condition type."),
        "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
        "reason": string("One-word machine-readable reason."),
        "message": string("Human-readable details."),
        "lastTransitionTime": time("When the status last changed."),
        "observedGeneration": count("The spec generation the condition reflects."),
    }, required=["type", "status"])
    return obj("Observed state, written by the operator.", {
        "phase": string(f"{Phase.listing()}.", enum=Phase.values()),
        "message": string("What is happening, or what went wrong and how to fix it."),
        "observedGeneration": count("The spec generation this status reflects."),
        "conditions": {"type": "array", "items": condition, "description": "Conditions, for `kubectl wait "
                       "--for=condition=Succeeded`.", "x-kubernetes-list-type": "map",
                       "x-kubernetes-list-map-keys": ["type"]},
        "planLocation": string("The plan (s3://.../_ocrjob/<uid>/plan.json); set before any pod exists. Once set, "
                               "the job is never re-planned."),
        "planId": string("The id of the committed plan (plan.json's plan_id); a stored plan with another id fails "
                         "the job (PlanConflict)."),
        "summaryLocation": string("The job summary (s3://.../_ocrjob/<uid>/summary.json, with index.json next to "
                                  "it), written when the job finished."),
        "planningAttempts": count("Planning attempts that failed on storage errors (bounded)."),
        "startTime": time("When planning finished and shards could start."),
        "completionTime": time("When the job finished."),
        "progress": string("Items done/total, e.g. 120/400."),
        "shardProgress": string("Shards succeeded/total, e.g. 2/4."),
        "shards": obj("Shard counts by state.", {
            "total": count("Planned shards."),
            "pending": count("Not started yet, or waiting for a retry."),
            "active": count("With a pod that has not finished."),
            "succeeded": count("Finished successfully."),
            "failed": count("Failed for good (retries spent or not retriable)."),
        }),
        "items": obj("Item counts over all shards.", {
            "total": count("Planned documents."),
            "done": count("Documents with a result (ok + failed + skipped)."),
            "ok": count("Documents OCR'd in this job's latest attempts."),
            "failed": count("Documents with an error record (corrupt, unsupported, too large); see the summary."),
            "skipped": count("Documents whose result already existed (resumed after a retry or interruption)."),
        }),
        "retries": obj("Retries so far.", {
            "counted": count("Shard retries that spent the retry budget (crashes, OOM, stalls, deadlines)."),
            "disruptions": count("Shard restarts after evictions, preemptions, node loss or suspension "
                                 "(budget not spent)."),
            "storage": count("Shard restarts after the shard found storage unavailable (exit 74; budget not spent, "
                             "bounded in time by spec.retries.infrastructureTimeoutSeconds)."),
        }),
        "vanishedPods": obj("Shard pods that disappeared before they finished (force-deleted, or deleted by "
                            "someone other than the operator): retried without spending the budget; their names "
                            "are never reused.", {
            "count": count("How many, over the job's life."),
            "pods": {"type": "array", "maxItems": F.VANISHED_KEPT, "description": "The latest ones.",
                     "items": obj("A vanished pod.", {
                         "name": string("Pod name."), "shard": count("Shard index."),
                         "attempt": count("Attempt number."),
                         "at": {"type": "number", "description": "When the operator found it gone (Unix time)."},
                         "lastSeen": string("What it was doing when last seen (Pending, Running, Terminating)."),
                     })},
        }),
        "failedShards": {"type": "array", "maxItems": 50, "description": "Shards that failed for good (first 50).",
                         "items": obj("A failed shard.", {"index": count("Shard index."),
                                                          "reason": string("Why it failed."),
                                                          "message": string("Details and how to fix it.")})},
    })


def build_crd() -> dict[str, Any]:
    schema = obj(
        "OcrJob: OCR every document under an S3 prefix with one single-GPU pod per shard. The operator plans "
        "balanced shards once, runs at most spec.parallelism pods, retries failed shards, and writes a job "
        "summary next to the results.",
        {
            "apiVersion": string("API version of the object: ocrjob.dev/v1alpha1."),
            "kind": string("Kind of the object: OcrJob."),
            "metadata": {"type": "object"},  # the apiserver allows nothing else here
            "spec": _spec_schema(),
            "status": _status_schema(),
        },
        required=["spec"],
        rules=[
            _rule(f"self.metadata.name.size() <= {MAX_JOB_NAME}",
                  f"metadata.name must be at most {MAX_JOB_NAME} characters: shard pods are named "
                  f"{POD_NAME_SHAPE} and must stay valid DNS labels; choose a shorter name"),
            _rule("!has(oldSelf.status) || !has(oldSelf.status.planLocation) || "
                  "(self.spec.input == oldSelf.spec.input && self.spec.output == oldSelf.spec.output)",
                  "spec.input and spec.output cannot change once the job is planned (status.planLocation is set): "
                  "create a new OcrJob for another input or output", reason="FieldValueForbidden"),
        ],
    )
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Job phase."},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "Items done/total."},
        {"name": "Shards", "type": "string", "jsonPath": ".status.shardProgress",
         "description": "Shards succeeded/total."},
        {"name": "Failed", "type": "integer", "jsonPath": ".status.items.failed",
         "description": "Items with an error record."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "ocrjob",
                                                   "app.kubernetes.io/part-of": "ocrjob"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": list(SHORT_NAMES),
                      "listKind": f"{KIND}List", "categories": ["ocrjob"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    }


HEADER = ("# Generated by `python -m ocrjob_operator.api.crd > crds/ocrjob.yaml` from "
          "operator/ocrjob_operator/api/crd.py.\n")


def render() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
