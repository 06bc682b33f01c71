"""The loader's configuration: everything a shard pod or local slot needs besides the shard manifest."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .decode import DecodeLimits
from .models import ModelSource, default_cache_dir
from .ocr_engine import OcrOptions
from .storage import S3Settings


@dataclass(frozen=True)
class LoaderConfig:
    manifest: str  # URI of the shard manifest, e.g. s3://bucket/out/_ocrjob/<job>/shards/00003.json
    models: ModelSource
    device: str = "cpu"  # cpu | gpu | gpu:N
    workers_per_device: int = 1
    ocr: OcrOptions = field(default_factory=OcrOptions)
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    s3: S3Settings = field(default_factory=S3Settings.from_env)
    page_batch_size: int = 4  # pages per predictor call
    download_threads: int = 4
    upload_threads: int = 2
    prefetch_pages: int = 16  # decoded pages waiting for the predictor, per worker (bounds memory)
    heartbeat_seconds: float = 5.0
    grace_seconds: float = 25.0  # after SIGTERM: finish the batch and flush uploads within this
    startup_seconds: float = 900.0  # workers must load their model within this
    stall_seconds: float = 600.0  # no finished item for this long is a systemic failure
    termination_log: str | None = field(
        default_factory=lambda: os.environ.get("OCRJOB_TERMINATION_LOG", "/dev/termination-log")
    )
    model_cache_dir: Path = field(default_factory=lambda: default_cache_dir() / "model-cache")

    def __post_init__(self) -> None:
        bounds = {
            "workers_per_device": (1, 16), "page_batch_size": (1, 256), "download_threads": (1, 64),
            "upload_threads": (1, 64), "prefetch_pages": (1, 4096),
            "heartbeat_seconds": (0.1, 3600), "grace_seconds": (0, 3600),
            "startup_seconds": (1, 86400), "stall_seconds": (1, 86400),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name.replace('_', '-')} must be between {low} and {high}, got {value}")
