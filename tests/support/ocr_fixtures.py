"""OCR model fixtures: the bundled PP-OCRv4 mobile models, built once per test session, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference_pod.models import MODELS_DIR_ENV, ModelSpec, bundle_is_complete, bundle_rapidocr_models


@pytest.fixture(scope="session")
def ocr_models(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """A ModelSpec for the bundled models.

    Reuses ``$OCRJOB_MODELS_DIR`` when it already holds a complete bundle (``make models`` builds it);
    otherwise builds a fresh bundle in a session temp dir, so a test run never modifies the user's cache.
    """
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured and bundle_is_complete(Path(configured)):
        return bundle_rapidocr_models(Path(configured))
    return bundle_rapidocr_models(tmp_path_factory.mktemp("models") / "pp-ocrv4-mobile")
