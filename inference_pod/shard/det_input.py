"""How one image is fed to text detection: a border in its background colour, and a resize chosen from its
shape (pure functions, no Paddle).

Why: the DB detector misses text that runs up to the image edge (it sees no paper around the strokes; real
line crops and receipts are cut a few pixels from the ink), and PaddleOCR's one side limit per call
(`max`, 960) shrinks a 2000x60 line crop to 960x32, where its text is a dozen pixels high and often not
found at all. So every image gets a border sized from its short side, and an image that the page rule would
shrink below a readable short side is detected at a scale that keeps it readable instead.

Invariants: the border is between MIN_BORDER and MAX_BORDER pixels on every side; `to_original` maps a point
of the padded image into the original image's pixel grid (0 <= x <= width - 1, 0 <= y <= height - 1), so the
polygons in a result are always valid for the image the user gave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BORDER_SHARE = 0.5  # of the image's short side: a line crop gets paper about half its height above and below
MIN_BORDER = 8  # px
MAX_BORDER = 32  # px; a page has margins of its own, more would only shrink its text at a fixed side limit
# px the short side keeps at detection scale. A 300-dpi line crop (~110 px padded) detected at 0.6-0.75 of its size
# (text 30-40 px high) lost nothing on 30 crops; at 0.47 (the page rule) or at full size whole lines went missing.
MIN_DET_SHORT_SIDE = 72
MAX_DET_LONG_SIDE = 4000  # px; PaddleX shrinks a longer side to this anyway (its max_side_limit)
LIMIT_MAX = "max"  # PaddleOCR's limit types: "max" shrinks the longer side to the limit,
RESIZE_LONG = "resize_long"  # "resize_long" scales the longer side to exactly the limit


@dataclass(frozen=True)
class DetResize:
    """PaddleOCR's per-call detection resize (`text_det_limit_side_len`, `text_det_limit_type`); images with
    equal decisions can share one call."""

    limit_side_len: int
    limit_type: str


@dataclass(frozen=True)
class DetInput:
    """One image as detection gets it: the original with `border` pixels around it, and its resize decision."""

    image: np.ndarray
    border: int
    resize: DetResize


def prepare(image: np.ndarray, adaptive: bool, page: DetResize) -> DetInput:
    """The detection input of `image` (H, W, C): with `adaptive`, padded and resized by its shape; else as given,
    resized by the `page` rule for every image (PaddleOCR's way)."""
    if not adaptive:
        return DetInput(image, 0, page)
    height, width = image.shape[:2]
    border = border_width(height, width)
    return DetInput(pad(image, border), border, det_resize(height, width, border, page))


def border_width(height: int, width: int) -> int:
    """The border added on each side of a `height` x `width` image before detection."""
    return int(min(MAX_BORDER, max(MIN_BORDER, round(BORDER_SHARE * min(height, width)))))


def background_colour(image: np.ndarray) -> tuple[int, ...]:
    """The median colour of the image's outermost pixels (H, W, C): the paper, for a scan or a crop of one."""
    frame = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return tuple(int(v) for v in np.median(frame, axis=0))


def pad(image: np.ndarray, border: int) -> np.ndarray:
    """`image` (H, W, C) with `border` pixels of its background colour on every side."""
    height, width, channels = image.shape
    padded = np.empty((height + 2 * border, width + 2 * border, channels), dtype=image.dtype)
    padded[...] = np.asarray(background_colour(image), dtype=image.dtype)
    padded[border:border + height, border:border + width] = image
    return padded


def det_resize(height: int, width: int, border: int, page: DetResize) -> DetResize:
    """The detection resize of a `height` x `width` image padded by `border` under the `page` rule ("longest
    side at most N"; another rule is kept as it is).

    A page keeps the rule's scale on its original size, the border added at that same scale (so the border never
    shrinks a page's text: its boxes, and the reading order built from them, stay as without it); pages of one
    size share one decision, so they share one PaddleOCR call. An image the rule would shrink below
    MIN_DET_SHORT_SIDE keeps its (padded) short side up to that, never upscaled, at most MAX_DET_LONG_SIDE long.
    """
    if page.limit_type != LIMIT_MAX:
        return page
    long_side, short_side = max(height, width), min(height, width)
    page_scale = min(1.0, page.limit_side_len / long_side)
    padded_long, padded_short = long_side + 2 * border, short_side + 2 * border
    if padded_short * page_scale >= MIN_DET_SHORT_SIDE:
        if page_scale == 1.0:  # not resized: one decision for every such image
            return DetResize(page.limit_side_len + 2 * border, LIMIT_MAX)
        return DetResize(round(page_scale * padded_long), LIMIT_MAX)
    scale = min(1.0, MIN_DET_SHORT_SIDE / padded_short, MAX_DET_LONG_SIDE / padded_long)
    return DetResize(max(1, round(padded_long * max(scale, page_scale))), RESIZE_LONG)


def to_original(polygon: Sequence[Sequence[float]], border: int, height: int, width: int) -> list[list[int]]:
    """A polygon found in the padded image, in the original `height` x `width` image's pixels (clipped to it)."""
    return [[min(max(round(float(x)) - border, 0), width - 1), min(max(round(float(y)) - border, 0), height - 1)]
            for x, y in polygon]
