"""Accuracy on document pages, as a behaviour: the loader's text on generated A4 pages (an image and a PDF the
loader renders itself) keeps English word spaces (WER bound), both engines read the same text, and the page text
users read is right on real-scan shapes (tight binarized line crops, receipts, skewed two-column pages, three
columns)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference_pod.job import layout
from inference_pod.job.plan import ShardingPolicy, make_plan, manifest_key
from inference_pod.job.settings import ENGINE_ONNXRUNTIME, ENGINE_PADDLE
from inference_pod.job.storage import LocalStorage
from inference_pod.local.accuracy import ErrorCounts, errors, text_errors
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


def run_loader(ocr_models: ModelSpec, tmp_path: Path, counts: dict[str, int],
               seed: int) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """One local shard over generated documents: their ground truth and the loader's result records, by name."""
    corpus, out = tmp_path / "in", tmp_path / "out"
    truth = generate_documents(corpus, counts, seed=seed)
    stored = make_plan("acc", str(corpus), str(out), LocalStorage(corpus), LocalStorage(out),
                       ShardingPolicy(shard_count=1))
    models = ModelSource(ocr_models.det_name, str(ocr_models.det_dir), ocr_models.rec_name, str(ocr_models.rec_dir))
    config = LoaderConfig(manifest=str(out / manifest_key(stored, 0)), models=models, device="cpu",
                          termination_log=None, model_cache_dir=tmp_path / "cache")
    code, summary = run_shard(config)
    assert code == 0, summary.message
    return truth, {name: json.loads((out / layout.result_key(name)).read_text(encoding="utf-8")) for name in truth}


def test_loader_keeps_word_spaces_on_a4_pages(ocr_models: ModelSpec, tmp_path: Path) -> None:
    truth, results = run_loader(ocr_models, tmp_path, {"a4-150-clean": 1, "pdf-150": 2}, seed=7)
    total = ErrorCounts()
    for name, lines in truth.items():
        record = results[name]
        text = [line for page in record["pages"] for line in page["text"].splitlines()]
        page_errors = errors(lines, text)
        assert page_errors.wer < MAX_WER, (name, page_errors, text[:5])
        total += page_errors
    assert total.cer < MAX_CER and total.wer < MAX_WER, total


# Real-scan shapes, a few small images each (2 CI cores). Page-text CER bounds per kind, from what these inputs
# measured with the adaptive detection input (line-300-tight 0.000, receipt-200 0.0075, a4-150-report 0.005) plus a
# margin; with plain detection (PaddleOCR's way, the old behaviour) line-300-tight measured 0.447 (lines lost
# whole), receipt-200 0.0075 and a4-150-report 0.0074.
SCAN_SHAPES = {"line-300-tight": 4, "receipt-200": 2, "a4-150-report": 1, "a4-150-skewed": 1, "a4-150-three-column": 1}
MAX_TEXT_CER = {"line-300-tight": 0.03, "receipt-200": 0.03, "a4-150-report": 0.03}
SKEWED, THREE_COLUMNS = "a4-150-skewed", "a4-150-three-column"


@pytest.fixture(scope="module")
def scan_shapes(ocr_models: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], dict]]:
    """{name: (ground truth, its page)} of one loader run over the real-scan shapes."""
    truth, results = run_loader(ocr_models, tmp_path_factory.mktemp("scans"), SCAN_SHAPES, seed=11)
    return {name: (lines, results[name]["pages"][0]) for name, lines in truth.items()}


def _text_cer(scan_shapes: dict[str, tuple[list[str], dict]], kind: str) -> ErrorCounts:
    return sum((text_errors(lines, page["text"]) for name, (lines, page) in scan_shapes.items()
                if name.startswith(f"{kind}/")), start=ErrorCounts())


def test_loader_reads_tight_crops_receipts_and_report_pages_into_page_text(scan_shapes) -> None:
    for name, (_, page) in scan_shapes.items():
        assert not page.get("no_text_found"), name
        for line in page["lines"]:  # polygons stay valid for the image the user gave (the border is taken off)
            assert all(0 <= x < page["width"] and 0 <= y < page["height"] for x, y in line["polygon"]), (name, line)
    for kind, bound in MAX_TEXT_CER.items():
        counts = _text_cer(scan_shapes, kind)
        assert counts.cer < bound, (kind, counts)


# Column pages: their boxes are right (box CER ~0.001); read row by row across the columns, as the reading order
# did while it took a median line under 10 box heights for a table, the text CER was 0.77 (12-pt skewed two-column)
# and 0.80 (three columns); read column by column it is ~0.001.
def test_loader_reads_a_skewed_two_column_page_column_by_column(scan_shapes) -> None:
    assert _text_cer(scan_shapes, SKEWED).cer < 0.03


def test_loader_reads_a_three_column_page_column_by_column(scan_shapes) -> None:
    assert _text_cer(scan_shapes, THREE_COLUMNS).cer < 0.03


def test_both_engines_read_the_same_text(ocr_models: ModelSpec) -> None:
    # Same PP-OCRv4 weights in two formats (the bundle's Paddle files and the pinned ONNX exports).
    page = np.asarray(render_page(["INVOICE Number 4821", "Customer Garden Office"], size=(640, 240)))
    texts = {}
    for engine in (ENGINE_ONNXRUNTIME, ENGINE_PADDLE):
        result = OcrEngine(ocr_models, OcrOptions(engine=engine), "cpu").predict([page])[0]
        texts[engine] = [line["text"] for line in result["lines"]]
    assert texts[ENGINE_ONNXRUNTIME] == texts[ENGINE_PADDLE]
    assert " ".join(texts[ENGINE_PADDLE]).split() == ["INVOICE", "Number", "4821", "Customer", "Garden", "Office"]
