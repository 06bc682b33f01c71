"""The blank-page measure: blank paper and scan noise are blank, a page with text strokes is not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from inference_pod.shard.blank import INK_FRACTION, ink_fraction, is_blank

A4_150DPI = (1754, 1240)  # rows, columns


def white() -> np.ndarray:
    return np.full((*A4_150DPI, 3), 255, np.uint8)


def scan_background(seed: int = 0) -> np.ndarray:
    """Grey-white paper with an illumination gradient, sensor noise and one-pixel dust specks."""
    rng = np.random.default_rng(seed)
    rows, cols = A4_150DPI
    gray = 230 + 20 * np.linspace(0, 1, cols)[None, :] + rng.normal(0, 12, (rows, cols))
    gray[rng.random((rows, cols)) < 0.0005] = 0  # ~1000 specks on the page
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def with_text(page: np.ndarray, text: str, size: int = 28) -> np.ndarray:
    image = Image.fromarray(page)
    ImageDraw.Draw(image).text((100, 200), text, fill=(25, 25, 25), font=ImageFont.load_default(size=size))
    return np.asarray(image)


@pytest.mark.parametrize("page", [white(), scan_background(), scan_background(1)[:300, :200], white()[:1, :1]],
                         ids=["white", "noisy scan", "small noisy", "one pixel"])
def test_blank_pages_are_blank(page: np.ndarray) -> None:
    assert is_blank(page)


@pytest.mark.parametrize("page", [with_text(white(), "Invoice"), with_text(scan_background(), "Invoice"),
                                  with_text(white(), "Total", size=16),
                                  with_text(white(), "The quick brown fox jumps over the lazy dog")],
                         ids=["word", "word on a noisy scan", "small word", "line"])
def test_a_page_with_text_strokes_is_not_blank(page: np.ndarray) -> None:
    assert ink_fraction(page) >= INK_FRACTION and not is_blank(page)


def test_gray_and_rgb_measure_the_same_and_empty_arrays_are_blank() -> None:
    page = with_text(white(), "Invoice")
    assert ink_fraction(page[:, :, 0]) == ink_fraction(page)
    assert ink_fraction(np.zeros((0, 10, 3), np.uint8)) == 0.0
    assert ink_fraction(np.zeros((3, 4000, 3), np.uint8)) == 0.0  # a strip thinner than a block: uniform, blank
