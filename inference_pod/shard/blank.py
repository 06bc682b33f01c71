"""Whether a decoded page is blank: the cheap measure that tells "nothing to read" from "text the OCR missed".

A page where no text is found is only a silent loss when it is not blank. The measure: the page in grayscale,
reduced by averaging square blocks (MIN_BLOCK pixels or more a side) to at most BLANK_SIDE pixels on its longer
side; its background is the median gray; a reduced pixel is ink when it differs from the background by more
than INK_CONTRAST; the page is blank when less than INK_FRACTION of them are ink. Block averaging is what keeps
scan noise and isolated dust out (a one-pixel speck is averaged over a block) while pen and print strokes, a few
pixels wide, stay dark. Numpy only: it runs in the inference thread on the array already decoded, and only for
pages without text.
"""

from __future__ import annotations

import math

import numpy as np

# A4 at 150 dpi reduces by 4x4 blocks, at 300 dpi by 7x7: a stroke of 2 px or more keeps > 1/4 of its contrast,
# sensor noise (sigma ~10 gray levels) drops to ~3, a lone one-pixel speck to 255/16 at most.
BLANK_SIDE = 512
# Small images are still averaged over 3x3 blocks: a one-pixel speck stays under INK_CONTRAST (255/9 = 28).
MIN_BLOCK = 3
# Gray levels (of 255) from the background: above an averaged noise floor and paper-tone variation, below the
# contrast of a thin stroke averaged over a block (about 60 and more).
INK_CONTRAST = 48.0
# About one short word in small print on an A4 page (~15 of the ~140,000 reduced pixels): less ink is blank. Dust
# specks of several pixels can pass it: a false "no text found" is cheap to look at, a silently lost page is not.
INK_FRACTION = 0.0001


def ink_fraction(image: np.ndarray) -> float:
    """The share of reduced pixels that differ from the background by more than INK_CONTRAST (RGB or gray uint8)."""
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return 0.0
    block = min(max(MIN_BLOCK, math.ceil(max(height, width) / BLANK_SIDE)), height, width)
    rows, cols = height // block, width // block
    blocks = image[: rows * block, : cols * block].reshape(rows, block, cols, block, -1)
    gray = blocks.mean(axis=(1, 3, 4))  # block average and channel average in one pass: no full-size copy
    return float(np.mean(np.abs(gray - np.median(gray)) > INK_CONTRAST))


def is_blank(image: np.ndarray) -> bool:
    return ink_fraction(image) < INK_FRACTION
