"""The loader's configuration: everything a shard pod or local slot needs besides the shard manifest."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference_pod.job import settings
from inference_pod.job.storage import S3Settings
from inference_pod.models import ModelSource, default_cache_dir, default_model_source
from inference_pod.shard.decode import DecodeLimits
from inference_pod.shard.engine import OcrOptions


@dataclass(frozen=True)
class LoaderConfig:
    manifest: str  # URI of the shard manifest, e.g. s3://bucket/out/_ocrjob/<job>/plans/<plan-id>/shards/00003.json
    models: ModelSource
    device: str = "cpu"  # cpu | gpu | gpu:N
    workers_per_device: int = settings.default("workers_per_device")
    ocr: OcrOptions = field(default_factory=OcrOptions)
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    s3: S3Settings = field(default_factory=S3Settings.from_env)
    page_batch_size: int = settings.default("page_batch_size")  # pages per predictor call
    download_threads: int = 4
    upload_threads: int = 2
    prefetch_pages: int = 16  # decoded pages waiting for the predictor, per worker (bounds memory)
    heartbeat_seconds: float = 5.0
    grace_seconds: float = settings.default("grace_seconds")  # after SIGTERM: finish the batch, flush uploads
    startup_seconds: float = 900.0  # workers must load their model within this
    stall_seconds: float = 600.0  # no finished item for this long is a systemic failure
    termination_log: str | None = field(
        default_factory=lambda: os.environ.get(settings.BY_NAME["termination_log"].env,
                                               settings.DEFAULT_TERMINATION_LOG)
    )
    model_cache_dir: Path = field(default_factory=lambda: default_cache_dir() / "model-cache")

    def __post_init__(self) -> None:
        settings.check_all({name: getattr(self, name) for name in ("workers_per_device", "page_batch_size",
                                                                   "grace_seconds")})
        bounds = {  # internal tuning, not user settings
            "download_threads": (1, 64),
            "upload_threads": (1, 64), "prefetch_pages": (1, 4096),
            "heartbeat_seconds": (0.1, 3600),
            "startup_seconds": (1, 86400), "stall_seconds": (1, 86400),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name.replace('_', '-')} must be between {low} and {high}, got {value}")


def config_from_settings(values: dict[str, Any]) -> LoaderConfig:
    """A LoaderConfig from loader settings (names from `inference_pod.job.settings`; missing ones take their
    defaults). Raises ValueError (SettingError included) saying which setting is wrong and how."""
    given = {name: value for name, value in values.items() if value is not None}
    checked = {**{s.name: s.default for s in settings.SETTINGS}, **settings.check_all(given)}
    names = tuple(checked[name] for name in settings.MODEL_SETTINGS)
    if any(names) and not all(names):
        raise ValueError(
            "give all four of --det-model-name, --det-model-dir, --rec-model-name and --rec-model-dir, "
            "or none of them to use the bundled PP-OCRv4 mobile models"
        )
    models = ModelSource(*names) if all(names) else default_model_source()
    ocr = OcrOptions(det_limit_side_len=checked["det_limit_side_len"], rec_batch_size=checked["rec_batch_size"],
                     engine=checked["engine"], det_input=checked["det_input"])
    limits = DecodeLimits(**{name: checked[name] for name in ("max_item_bytes", "max_pixels", "max_pages", "pdf_dpi")})
    extra = {"termination_log": checked["termination_log"]} if "termination_log" in given else {}
    return LoaderConfig(
        manifest=checked["manifest"] or "", models=models, device=checked["device"],
        workers_per_device=checked["workers_per_device"], ocr=ocr, limits=limits,
        page_batch_size=checked["page_batch_size"], grace_seconds=checked["grace_seconds"], **extra,
    )
