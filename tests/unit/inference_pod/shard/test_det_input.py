"""The detection input: border size and colour, the resize decision per image shape, polygons mapped back."""

from __future__ import annotations

import numpy as np
import pytest

from inference_pod.job import settings
from inference_pod.shard import det_input
from inference_pod.shard.det_input import (
    LIMIT_MAX,
    MAX_BORDER,
    MAX_DET_LONG_SIDE,
    MIN_BORDER,
    MIN_DET_SHORT_SIDE,
    RESIZE_LONG,
    DetResize,
    background_colour,
    border_width,
    det_resize,
    pad,
    prepare,
    to_original,
)

LIMIT = settings.default("det_limit_side_len")
PAGE = DetResize(LIMIT, LIMIT_MAX)


@pytest.mark.parametrize(("height", "width"), [(60, 2000), (1754, 1240), (3, 3), (5000, 40), (656, 500)])
def test_the_border_is_sized_from_the_short_side_within_its_bounds(height: int, width: int) -> None:
    border = border_width(height, width)
    assert MIN_BORDER <= border <= MAX_BORDER
    assert border == min(MAX_BORDER, max(MIN_BORDER, round(det_input.BORDER_SHARE * min(height, width))))


def test_a_line_crop_gets_paper_about_half_its_height_and_a_page_the_cap() -> None:
    assert border_width(60, 2000) == 30
    assert border_width(1754, 1240) == MAX_BORDER


def test_padding_uses_the_background_colour_and_keeps_the_image_in_the_middle() -> None:
    image = np.full((10, 40, 3), (250, 240, 230), dtype=np.uint8)
    image[4:6, 0:40] = 0  # a "text line" touching both side edges
    padded = pad(image, 8)
    assert padded.shape == (26, 56, 3) and padded.dtype == np.uint8
    assert (padded[8:18, 8:48] == image).all()
    assert tuple(padded[0, 0]) == (250, 240, 230) and tuple(padded[12, 2]) == (250, 240, 230)


def test_the_background_is_the_paper_not_the_ink() -> None:
    dark_page = np.full((20, 20, 3), 30, dtype=np.uint8)
    dark_page[8:12, 2:18] = 255  # light text on dark paper
    assert background_colour(dark_page) == (30, 30, 30)


def _scale(height: int, width: int, border: int, decision: DetResize) -> float:
    """The scale PaddleOCR applies to the padded image under `decision` (before rounding to multiples of 32)."""
    long_side = max(height, width) + 2 * border
    if decision.limit_type == RESIZE_LONG:
        return decision.limit_side_len / long_side
    return min(1.0, decision.limit_side_len / long_side)


@pytest.mark.parametrize(("height", "width"), [(1754, 1240), (3508, 2480), (1240, 1754), (700, 500), (300, 200)])
def test_a_page_keeps_the_page_rules_scale_and_the_border_does_not_shrink_its_text(height: int, width: int) -> None:
    border = border_width(height, width)
    decision = det_resize(height, width, border, PAGE)
    assert decision.limit_type == LIMIT_MAX
    assert _scale(height, width, border, decision) == pytest.approx(min(1.0, LIMIT / max(height, width)), rel=1e-3)


def test_pages_of_one_size_and_all_unresized_pages_share_one_decision() -> None:
    assert det_resize(1754, 1240, MAX_BORDER, PAGE) == det_resize(1754, 1240, MAX_BORDER, PAGE)
    assert det_resize(700, 500, MAX_BORDER, PAGE) == det_resize(900, 300, MAX_BORDER, PAGE)


def test_a_wide_line_crop_is_not_shrunk_to_an_unreadable_height() -> None:
    # The page rule would give 960 x ~35: the text a dozen pixels high.
    decision = det_resize(60, 2000, 30, PAGE)
    assert decision.limit_type == RESIZE_LONG
    assert _scale(60, 2000, 30, decision) * 120 == pytest.approx(MIN_DET_SHORT_SIDE, abs=1)


def test_a_short_image_is_scaled_only_as_far_as_the_minimum_short_side_and_never_upscaled() -> None:
    assert det_resize(400, 4000, 0, PAGE).limit_type == LIMIT_MAX  # the page rule keeps 96 px: enough
    decision = det_resize(200, 4000, 0, PAGE)  # page rule: 48 px
    assert decision.limit_type == RESIZE_LONG
    assert _scale(200, 4000, 0, decision) * 200 == pytest.approx(MIN_DET_SHORT_SIDE, abs=1)
    assert det_resize(20, 600, 10, PAGE) == DetResize(620, RESIZE_LONG)  # already small: as is, not upscaled


def test_a_very_long_strip_stays_within_the_detectors_longest_side() -> None:
    assert det_resize(100, 12_000, 0, PAGE) == DetResize(MAX_DET_LONG_SIDE, RESIZE_LONG)


def test_polygons_map_back_into_the_original_image_and_are_clipped_to_it() -> None:
    height, width, border = 60, 2000, 30
    inside = [[40, 35], [1990, 35], [1990, 80], [40, 80]]
    assert to_original(inside, border, height, width) == [[10, 5], [1960, 5], [1960, 50], [10, 50]]
    # A box grown past the text (unclip) into the border lands on the image's edge, never outside it.
    around = [[2.4, 1.6], [2059.0, 0.0], [2060.0, 119.0], [0.0, 119.9]]
    assert to_original(around, border, height, width) == [[0, 0], [1999, 0], [1999, 59], [0, 59]]


def test_another_page_rule_is_kept_as_it_is() -> None:
    rule = DetResize(736, "min")
    assert det_resize(60, 2000, 30, rule) == rule


def test_prepare_pads_and_decides_only_when_adaptive() -> None:
    image = np.full((60, 2000, 3), 255, dtype=np.uint8)
    plain = prepare(image, adaptive=False, page=PAGE)
    assert plain.image is image and plain.border == 0 and plain.resize == PAGE
    adaptive = prepare(image, adaptive=True, page=PAGE)
    assert adaptive.border == border_width(60, 2000)
    assert adaptive.image.shape == (60 + 2 * adaptive.border, 2000 + 2 * adaptive.border, 3)
    assert adaptive.resize == det_resize(60, 2000, adaptive.border, PAGE)
