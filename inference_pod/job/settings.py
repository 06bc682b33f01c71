"""The one table of loader settings: flag, environment variable, type, default, bounds and help of each.

Read by the shard pod's entry (`python -m inference_pod`), by `ocrjob run`, by the operator's pod builder
(which turns an OcrJob's values into the pod's environment) and by the CRD generator (which takes the
bounds, defaults and help of the settings an OcrJob can set). A setting's default or bound is changed here
and nowhere else. Never imports Paddle, kubernetes or the operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference_pod.job.layout import INDEX_PLACEHOLDER, fill_index

ENV_PREFIX = "OCRJOB_"

# Set by the operator on every shard pod besides the settings below (identity, for the records they write).
ATTEMPT_ENV = "OCRJOB_ATTEMPT"
JOB_NAME_ENV = "OCRJOB_JOB_NAME"
SHARD_ENV = "OCRJOB_SHARD"
POD_NAME_ENV = "POD_NAME"
# Set by the Job controller in each pod of an Indexed Job: the index, which fills in a manifest pattern.
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
# How the loader reaches S3 (S3Settings.from_env reads them); credentials come from the standard AWS chain.
S3_ENDPOINT_ENV = "OCRJOB_S3_ENDPOINT"
S3_REGION_ENV = "OCRJOB_S3_REGION"
S3_PATH_STYLE_ENV = "OCRJOB_S3_PATH_STYLE"
LOG_LEVEL_ENV = "OCRJOB_LOG_LEVEL"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# PaddleOCR's inference engines the loader offers. ONNX Runtime is the default: on document pages on a
# 2-core CPU it ran the same PP-OCRv4 models 4-7x faster than Paddle Inference with the same text (BENCHMARKS.md).
ENGINE_ONNXRUNTIME = "onnxruntime"
ENGINE_PADDLE = "paddle"
ENGINES = (ENGINE_ONNXRUNTIME, ENGINE_PADDLE)
# How images are fed to text detection (inference_pod.shard.det_input). Adaptive is the default: on tight line
# crops and receipts it finds the text plain detection loses at the edges, at the same text on A4 pages.
DET_INPUT_ADAPTIVE = "adaptive"
DET_INPUT_PLAIN = "plain"
DET_INPUTS = (DET_INPUT_ADAPTIVE, DET_INPUT_PLAIN)


class SettingError(ValueError):
    """A setting's value is of the wrong type or out of bounds; the message names the flag and the range."""


@dataclass(frozen=True)
class Setting:
    """One loader setting. `spec` is the OcrJob field that sets it per job (None: not settable per job)."""

    name: str  # LoaderConfig attribute, and the flag and env var derived from it
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    spec: str | None = None
    local: bool = True  # an option of `ocrjob run` too (the others are per-shard: manifest, device, ...)
    choices: tuple[str, ...] = ()  # a string setting with a fixed set of values

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def where(self) -> str:
        return f"{self.flag}, {self.env}" + (f", OcrJob spec.{self.spec}" if self.spec else "")

    def check(self, value: Any) -> Any:
        """`value` converted to the setting's type and checked against its bounds."""
        if value is None:
            return None
        try:
            typed = self.type(value)
        except (TypeError, ValueError) as exc:
            kind = {int: "an integer", float: "a number"}.get(self.type, "a string")
            raise SettingError(f"{self.name} must be {kind}, got {value!r} ({self.where})") from exc
        if self.type in (int, float) and (isinstance(value, bool) or (self.type is int and typed != float(value))):
            raise SettingError(f"{self.name} must be a whole number, got {value!r} ({self.where})")
        if self.choices and typed not in self.choices:
            raise SettingError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r} ({self.where})")
        if self.low is not None and self.high is not None and not self.low <= typed <= self.high:
            raise SettingError(f"{self.name} must be between {_num(self.low)} and {_num(self.high)}, got {value} "
                               f"({self.where})")
        return typed


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("manifest", str, None,
            "The shard manifest URI (s3://.../_ocrjob/<job>/plans/<plan-id>/shards/NNNNN.json or a path); "
            f"{INDEX_PLACEHOLDER} in it stands for ${COMPLETION_INDEX_ENV} (a pod of an Indexed Job).",
            local=False),
    Setting("device", str, "gpu", "cpu, gpu (the one visible GPU) or gpu:N.", spec="device", local=False),
    Setting("termination_log", str, DEFAULT_TERMINATION_LOG, "Where the <= 4 KiB shard summary goes.",
            local=False),
    Setting("workers_per_device", int, 1, "Predictor processes sharing one device (each owns one model instance).",
            1, 16, spec="workersPerPod"),
    Setting("engine", str, ENGINE_ONNXRUNTIME, "Inference engine: onnxruntime (ONNX Runtime, the models' "
            "inference.onnx) or paddle (Paddle Inference, inference.pdiparams).", spec="ocr.engine", choices=ENGINES),
    Setting("page_batch_size", int, 4, "Pages per predictor call.", 1, 256, spec="ocr.pageBatchSize"),
    Setting("rec_batch_size", int, 8, "Text lines per recognition batch.", 1, 1_024, spec="ocr.recBatchSize"),
    Setting("det_limit_side_len", int, 960, "Longest image side fed to text detection, in pixels.", 32, 8_192,
            spec="ocr.detLimitSideLen"),
    Setting("det_input", str, DET_INPUT_ADAPTIVE, "How images are fed to text detection: adaptive (a border in the "
            "page's background colour, and the resize chosen per image shape so a line crop keeps its height) or plain "
            "(as given, longest side limited to det_limit_side_len).", spec="ocr.detInput", choices=DET_INPUTS),
    Setting("max_pixels", int, 40_000_000, "Per page: pages with more pixels become item errors, not decoded.",
            1, 400_000_000, spec="ocr.maxPixels"),
    Setting("max_pages", int, 1_000, "Per document: documents with more pages become item errors.", 1, 100_000,
            spec="ocr.maxPages"),
    Setting("max_item_bytes", int, 256 << 20, "Per document: larger documents (bytes) become item errors.",
            1, 4 << 30, spec="ocr.maxItemBytes"),
    Setting("pdf_dpi", int, 150, "PDF rendering resolution.", 36, 600, spec="ocr.pdfDpi"),
    Setting("grace_seconds", float, 25.0, "After SIGTERM: finish the batch and flush uploads within this.", 0, 3_600),
    Setting("det_model_name", str, None, "Detection model name (with the three other model settings).",
            spec="models.detection.name"),
    Setting("det_model_dir", str, None, "Detection model directory or s3:// prefix.",
            spec="models.detection.location"),
    Setting("rec_model_name", str, None, "Recognition model name.", spec="models.recognition.name"),
    Setting("rec_model_dir", str, None, "Recognition model directory or s3:// prefix.",
            spec="models.recognition.location"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
MODEL_SETTINGS = ("det_model_name", "det_model_dir", "rec_model_name", "rec_model_dir")


def default(name: str) -> Any:
    return BY_NAME[name].default


def bounds(name: str) -> tuple[float, float]:
    setting = BY_NAME[name]
    assert setting.low is not None and setting.high is not None, name
    return setting.low, setting.high


def check_all(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every known setting in `values` converted and bound-checked; unknown names are a programming error."""
    return {name: BY_NAME[name].check(value) for name, value in values.items()}


def environment(values: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables that hand `values` (setting name -> value) to a shard pod; None is left out."""
    out = {}
    for name, value in check_all(values).items():
        if value is not None:
            out[BY_NAME[name].env] = _num(value) if isinstance(value, float) else str(value)
    return out


def markdown_table() -> str:
    """The README's loader-options table, generated from SETTINGS (a unit test keeps the README current):
    `python -c 'from inference_pod.job.settings import markdown_table; print(markdown_table())'`."""
    rows = ["| option | env | default | bounds | OcrJob field | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        default_ = "—" if s.default is None else f"`{_num(s.default) if isinstance(s.default, float) else s.default}`"
        bound = f"{_num(s.low)}–{_num(s.high)}" if s.low is not None and s.high is not None else ""
        field = f"`spec.{s.spec}`" if s.spec else ""
        scope = "" if s.local else " (shard only)"
        rows.append(f"| `{s.flag}`{scope} | `{s.env}` | {default_} | {bound} | {field} | {s.help} |")
    return "\n".join(rows)


class NoShardIndex(SettingError):
    """A manifest pattern in a process that was given no shard index."""


def manifest_for_pod(manifest: str, index: str | None) -> str:
    """The manifest a shard pod reads: `manifest` as given, or a pattern filled in with the pod's completion
    index (`index`: the text of $JOB_COMPLETION_INDEX)."""
    if INDEX_PLACEHOLDER not in manifest:
        return manifest
    if index is None or not index.isdigit():
        raise NoShardIndex(f"the manifest {manifest!r} has {INDEX_PLACEHOLDER} for a shard index, but "
                           f"${COMPLETION_INDEX_ENV} is {index!r}: run it as a pod of an Indexed Job, or give one "
                           "shard's manifest")
    return fill_index(manifest, int(index))
