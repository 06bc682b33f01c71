"""OcrEngine.predict around PaddleOCR (faked): images grouped by their detection resize, results back in input
order, polygons in the original image's pixels. No Paddle is imported."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from inference_pod.job import settings
from inference_pod.shard.det_input import LIMIT_MAX, DetResize, border_width, det_resize
from inference_pod.shard.engine import OcrEngine, OcrOptions


class FakePaddleOcr:
    """Records each call's images and resize; finds one box covering the whole (padded) image."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, ...]], int, str]] = []

    def predict(self, images: list[np.ndarray], text_det_limit_side_len: int, text_det_limit_type: str) -> list[dict]:
        self.calls.append(([image.shape for image in images], text_det_limit_side_len, text_det_limit_type))
        return [{"rec_texts": [f"{image.shape[0]}x{image.shape[1]}"], "rec_scores": [0.9],
                 "rec_polys": [np.array([[0, 0], [image.shape[1], 0], [image.shape[1], image.shape[0]],
                                         [0, image.shape[0]]])]} for image in images]


def engine(det_input: str) -> tuple[OcrEngine, FakePaddleOcr]:
    ocr = OcrEngine.__new__(OcrEngine)  # no models: only predict's own work is under test
    fake = FakePaddleOcr()
    ocr.options, ocr._ocr, ocr._owner = OcrOptions(det_input=det_input), fake, threading.get_ident()
    return ocr, fake


PAGE = np.full((1754, 1240, 3), 255, dtype=np.uint8)
LINE = np.full((60, 2000, 3), 255, dtype=np.uint8)


def test_pages_share_one_call_and_a_line_crop_gets_its_own() -> None:
    ocr, fake = engine(settings.DET_INPUT_ADAPTIVE)
    results = ocr.predict([PAGE, LINE, PAGE])
    assert len(fake.calls) == 2
    pages_call, line_call = fake.calls
    page_border = border_width(1754, 1240)
    page_rule = DetResize(settings.default("det_limit_side_len"), LIMIT_MAX)
    assert len(pages_call[0]) == 2 and DetResize(*pages_call[1:]) == det_resize(1754, 1240, page_border, page_rule)
    assert len(line_call[0]) == 1 and line_call[2] != LIMIT_MAX
    page, line = border_width(1754, 1240), border_width(60, 2000)
    padded_page, padded_line = f"{1754 + 2 * page}x{1240 + 2 * page}", f"{60 + 2 * line}x{2000 + 2 * line}"
    assert [r["lines"][0]["text"] for r in results] == [padded_page, padded_line, padded_page]  # input order


def test_polygons_come_back_in_the_original_images_pixels() -> None:
    ocr, _ = engine(settings.DET_INPUT_ADAPTIVE)
    (result,) = ocr.predict([LINE])
    assert (result["width"], result["height"]) == (2000, 60)
    assert result["lines"][0]["polygon"] == [[0, 0], [1999, 0], [1999, 59], [0, 59]]


def test_plain_input_is_paddleocrs_way_one_call_no_border() -> None:
    ocr, fake = engine(settings.DET_INPUT_PLAIN)
    results: list[Any] = ocr.predict([PAGE, LINE])
    assert fake.calls == [([PAGE.shape, LINE.shape], settings.default("det_limit_side_len"), "max")]
    assert results[1]["lines"][0]["text"] == "60x2000"
