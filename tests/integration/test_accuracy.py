"""Accuracy on document pages, as a behaviour: the loader's text on generated A4 pages (an image and a PDF the
loader renders itself) keeps English word spaces (WER bound), and both engines read the same text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference_pod.job import layout
from inference_pod.job.plan import ShardingPolicy, make_plan, manifest_key
from inference_pod.job.settings import ENGINE_ONNXRUNTIME, ENGINE_PADDLE
from inference_pod.job.storage import LocalStorage
from inference_pod.local.accuracy import ErrorCounts, errors
from inference_pod.local.documents import generate_documents
from inference_pod.local.samples import render_page
from inference_pod.models import ModelSource, ModelSpec
from inference_pod.shard.config import LoaderConfig
from inference_pod.shard.coordinator import run_shard
from inference_pod.shard.engine import OcrEngine, OcrOptions

pytestmark = [pytest.mark.ocr, pytest.mark.slow]

# Bounds with room for the noise of one or two misread words; before word spaces were kept (PaddleOCR's
# box unclip 1.5) the WER on such pages was 0.3-0.9 at the same CER.
MAX_WER = 0.05
MAX_CER = 0.02


def test_loader_keeps_word_spaces_on_a4_pages(ocr_models: ModelSpec, tmp_path: Path) -> None:
    corpus, out = tmp_path / "in", tmp_path / "out"
    truth = generate_documents(corpus, {"a4-150-clean": 1, "pdf-150": 2}, seed=7)
    stored = make_plan("acc", str(corpus), str(out), LocalStorage(corpus), LocalStorage(out),
                       ShardingPolicy(shard_count=1))
    models = ModelSource(ocr_models.det_name, str(ocr_models.det_dir), ocr_models.rec_name, str(ocr_models.rec_dir))
    config = LoaderConfig(manifest=str(out / manifest_key(stored, 0)), models=models, device="cpu",
                          termination_log=None, model_cache_dir=tmp_path / "cache")
    code, summary = run_shard(config)
    assert code == 0, summary.message
    total = ErrorCounts()
    for name, lines in truth.items():
        record = json.loads((out / layout.result_key(name)).read_text(encoding="utf-8"))
        text = [line for page in record["pages"] for line in page["text"].splitlines()]
        page_errors = errors(lines, text)
        assert page_errors.wer < MAX_WER, (name, page_errors, text[:5])
        total += page_errors
    assert total.cer < MAX_CER and total.wer < MAX_WER, total


def test_both_engines_read_the_same_text(ocr_models: ModelSpec) -> None:
    # Same PP-OCRv4 weights in two formats (the bundle's Paddle files and the pinned ONNX exports).
    page = np.asarray(render_page(["INVOICE Number 4821", "Customer Garden Office"], size=(640, 240)))
    texts = {}
    for engine in (ENGINE_ONNXRUNTIME, ENGINE_PADDLE):
        result = OcrEngine(ocr_models, OcrOptions(engine=engine), "cpu").predict([page])[0]
        texts[engine] = [line["text"] for line in result["lines"]]
    assert texts[ENGINE_ONNXRUNTIME] == texts[ENGINE_PADDLE]
    assert " ".join(texts[ENGINE_PADDLE]).split() == ["INVOICE", "Number", "4821", "Customer", "Garden", "Office"]
