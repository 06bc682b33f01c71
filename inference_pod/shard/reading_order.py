"""Reading order of the text boxes a detector found on one page: deskew, columns, rows (pure functions).

The page's skew comes from the boxes themselves (the length-weighted median of the long-axis angles of
boxes clearly wider than tall), so rows are grouped in the deskewed frame: on an A4 page skewed by 2 degrees
a line's end sits 43 px lower than its start, more than the line pitch. Columns come from an XY-cut over the
deskewed boxes: bands of boxes separated by horizontal whitespace are grouped into runs that share a vertical
gutter; a run is cut into columns only where both sides read as running text (several lines that sit side by
side and, where their rows line up as a table's do, are long next to the gutter), so a table or a key-value block
stays row-wise, and a heading or footer that crosses the gutter ends the run (it is read before or after the
columns), as do rows at the run's ends that do not start at the columns' edges (a table below them).

Geometry only: boxes are polygons ([[x, y], ...] in image pixels, y down, any point order), or None where a
box has none. Rotations by 90, 180 or 270 degrees are not handled (the estimate is 0 beyond MAX_SKEW).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median

Polygon = Sequence[Sequence[float]]

MIN_HEIGHT = 1.0  # px; a flatter box (a degenerate polygon) has no usable vertical extent
MAX_SKEW = 15.0  # degrees; a larger estimate is a rotated page or noise, not scan skew: read as 0
MIN_ELONGATION = 2.0  # long side / short side of a box whose long axis is trusted as a text direction
LINE_OVERLAP = 0.5  # vertical overlap, as a share of the lower box, that puts two boxes on one line
MIN_GUTTER = 0.7  # column gutter width in median box heights: wider than the gap between two words (~0.2 on
# print, 0.55 between the word boxes of the unit tests), narrower than a 0.3-inch gutter between columns of 12 pt
# once the detector has padded the boxes (0.9)
BLOCK_GAP = 2.0  # whitespace in median box heights that always ends a run: more than a blank line
MIN_COLUMN_LINES = 3  # lines each side needs to be a column (two stray boxes side by side are not)
# Prose columns versus table columns. A table's cells are short next to the gaps between them (measured on the
# synthetic pages: median cell <= 1.3 gutters), a prose column's lines long (two and three columns of 9.5-12 pt,
# skewed or not: >= 3.8 gutters); 2.5 sits between the two with room either side. The ratio, unlike a fixed length
# in box heights (once 10: three columns of 12 pt measure 5.7-7, skewed two columns 9-10), does not move with the
# font size or the detector's box height.
PROSE_TO_GUTTER = 2.5  # median line (stretch) of each side, in widths of the gutter between them
MIN_LINE_LENGTH = 3.0  # box heights (~6 characters): shorter lines are labels or numbers, not running text
# The ratio is asked only where the rows of the two sides line up, as a table's must: lines of two columns set
# independently meet at the same height by chance (centres within ALIGN_TOLERANCE at a pitch of 1.4 box heights:
# ~35 %), a table's cells share their row's baseline (all of them; the side with fewer lines, as a cell wrapped
# over two lines leaves the extra lines unpaired).
ALIGN_TOLERANCE = 0.25  # centre distance, in box heights, of two lines at the same height across the gutter
ALIGNED_ROWS = 0.8  # share of the lines of the side with fewer lines that have a partner: rows as in a table
# A column's lines start at its left edge, give or take a paragraph's indent (1-2 em, under 1.5 box heights). Bands
# at the top or bottom of a run whose text on either side starts further in are no lines of its columns (the rows
# of a table below them that happen to leave the gutter free: their cells start 4 box heights and more off the
# columns' edges) and are read before or after the columns, not split between them.
COLUMN_EDGE = 2.0  # box heights
COLUMN_OVERLAP = 0.5  # share of the shorter column's height both columns span: side by side, not one above the other

Interval = tuple[float, float]
ALL_X: list[Interval] = [(-math.inf, math.inf)]


@dataclass(frozen=True)
class Box:
    """A box in the deskewed frame: x0 <= x1 and y1 - y0 >= MIN_HEIGHT (degenerate boxes get the page's median
    height about their centre)."""

    index: int  # position in the caller's list
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def centre(self) -> float:
        return (self.y0 + self.y1) / 2


def reading_order(polygons: Sequence[Polygon | None]) -> list[list[int]]:
    """The page's text rows in reading order, each the indices of its boxes left to right.

    Every index appears exactly once. Boxes without a polygon (None, empty) come last, one row each, in
    their given order.
    """
    placed = {i: polygon for i, polygon in enumerate(polygons) if polygon}
    boxes = deskewed_boxes(placed, estimate_skew(list(placed.values())))
    height = median(b.height for b in boxes) if boxes else MIN_HEIGHT
    rows = [[b.index for b in line] for line in _order(boxes, height)]
    return rows + [[i] for i, polygon in enumerate(polygons) if not polygon]


def estimate_skew(polygons: Sequence[Polygon]) -> float:
    """The page's skew in degrees (positive: text runs down to the right in image coordinates).

    The length-weighted median of the long-axis angles of boxes at least MIN_ELONGATION times wider than tall;
    0 when no box qualifies or the estimate exceeds MAX_SKEW.
    """
    angles = [axis for axis in map(_long_axis, polygons) if axis is not None]
    angle = _weighted_median(angles) if angles else 0.0
    return angle if abs(angle) <= MAX_SKEW else 0.0


def _weighted_median(pairs: list[tuple[float, float]]) -> float:
    """The value at which the (value, weight) pairs' cumulative weight first reaches half of the total."""
    pairs = sorted(pairs)
    half, total = sum(weight for _, weight in pairs) / 2, 0.0
    for value, weight in pairs:
        total += weight
        if total >= half:
            return value
    return pairs[-1][0]  # only reached through rounding of the sum


def _long_axis(polygon: Polygon) -> tuple[float, float] | None:
    """(angle in degrees in (-90, 90], length) of the polygon's principal axis, or None if not elongated.

    The principal axis of a rectangle's corners is its long side whatever order the corners come in.
    """
    n = len(polygon)
    mx, my = sum(p[0] for p in polygon) / n, sum(p[1] for p in polygon) / n
    cxx = sum((p[0] - mx) ** 2 for p in polygon) / n
    cyy = sum((p[1] - my) ** 2 for p in polygon) / n
    cxy = sum((p[0] - mx) * (p[1] - my) for p in polygon) / n
    spread = math.hypot((cxx - cyy) / 2, cxy)
    major, minor = (cxx + cyy) / 2 + spread, max((cxx + cyy) / 2 - spread, 0.0)
    if major <= 0 or major < MIN_ELONGATION**2 * minor:  # variances scale with the square of lengths
        return None
    angle = math.degrees(math.atan2(2 * cxy, cxx - cyy) / 2)
    return (angle if angle > -90 else angle + 180), 2 * math.sqrt(major)  # 2 sigma: a rectangle's side


def deskewed_boxes(polygons: Mapping[int, Polygon], skew: float) -> list[Box]:
    """Each polygon's bounding box (indexed by its key) after rotating the page by -skew degrees about the
    origin (only relative positions matter). A box flatter than MIN_HEIGHT gets the others' median height."""
    cos, sin = math.cos(math.radians(skew)), math.sin(math.radians(skew))
    raw = []
    for index, polygon in polygons.items():
        xs = [x * cos + y * sin for x, y, *_ in polygon]
        ys = [y * cos - x * sin for x, y, *_ in polygon]
        raw.append(Box(index, min(xs), min(ys), max(xs), max(ys)))
    solid = [b.height for b in raw if b.height >= MIN_HEIGHT]
    fill = median(solid) if solid else MIN_HEIGHT
    return [b if b.height >= MIN_HEIGHT else Box(b.index, b.x0, b.centre - fill / 2, b.x1, b.centre + fill / 2)
            for b in raw]


def _order(boxes: list[Box], height: float) -> list[list[Box]]:
    """Lines of `boxes` in reading order: runs top to bottom; a run with columns column by column."""
    lines: list[list[Box]] = []
    for run in _runs(_bands(boxes), height):
        parts = _column_cut(run, height)
        if parts is None:
            lines += group_lines(run)
        else:
            for part in parts:
                lines += _order(part, height)
    return lines


def _bands(boxes: list[Box]) -> list[list[Box]]:
    """Boxes split at horizontal whitespace: each band's vertical extent is connected; bands top to bottom."""
    bands: list[list[Box]] = []
    bottom = -math.inf
    for box in sorted(boxes, key=lambda b: b.y0):
        if bands and box.y0 < bottom:
            bands[-1].append(box)
        else:
            bands.append([box])
        bottom = max(bottom, box.y1) if len(bands[-1]) > 1 else box.y1
    return bands


def _runs(bands: list[list[Box]], height: float) -> list[list[Box]]:
    """Consecutive bands merged while they share a gutter (a vertical gap at least MIN_GUTTER wide with boxes
    on both sides) and no whitespace of BLOCK_GAP separates them."""
    runs: list[list[Box]] = []
    free: list[Interval] = []
    for band in bands:
        shared = _intersect(free, _gaps(band))
        if runs and _gutters(shared, runs[-1] + band, height) and _top(band) - _bottom(runs[-1]) < BLOCK_GAP * height:
            runs[-1] += band
            free = shared
        else:
            runs.append(list(band))
            free = _gaps(band)
    return runs


def _column_cut(run: list[Box], height: float) -> list[list[Box]] | None:
    """The run's parts in reading order if it holds columns, else None: cut at its widest gutter whose two sides
    are columns of running text side by side (left, right), once bands at its top or bottom that are no lines of
    those columns (COLUMN_EDGE) are split off, to be read before and after them."""
    bands = _bands(run)
    free = ALL_X
    for band in bands:
        free = _intersect(free, _gaps(band))
    for left_edge, right_edge in sorted(_gutters(free, run, height), key=lambda g: g[0] - g[1]):
        left = [b for b in run if b.x1 <= left_edge]
        right = [b for b in run if b.x0 >= right_edge]
        if not (_side_by_side(left, right) and _prose_columns(left, right, right_edge - left_edge, height)):
            continue
        starts = ((_left(left), -math.inf, left_edge), (right_edge, right_edge, math.inf))
        fit = [i for i, band in enumerate(bands) if all(
            min((b.x0 for b in band if low <= b.x0 < high), default=start) - start <= COLUMN_EDGE * height
            for start, low, high in starts)]
        if not fit or (fit[0], fit[-1]) == (0, len(bands) - 1):
            return [left, right]
        parts = bands[:fit[0]], bands[fit[0]:fit[-1] + 1], bands[fit[-1] + 1:]
        return [[b for band in part for b in band] for part in parts if part]
    return None


def _prose_columns(left: list[Box], right: list[Box], gutter: float, height: float) -> bool:
    """Both sides running text rather than table cells: enough lines each, and their stretches of text (cut at
    gaps of MIN_GUTTER, so a side holding two table columns counts its cells, and one holding two text columns
    its column lines) mostly long; where the rows line up as in a table, long next to the gutter too."""
    sides = group_lines(left), group_lines(right)
    if min(map(len, sides)) < MIN_COLUMN_LINES:
        return False
    shortest = MIN_LINE_LENGTH * height
    if _aligned(*sides, height):
        shortest = max(shortest, PROSE_TO_GUTTER * gutter)
    return all(median(s for line in lines for s in _stretches(line, MIN_GUTTER * height)) >= shortest
               for lines in sides)


def _aligned(left: list[list[Box]], right: list[list[Box]], height: float) -> bool:
    """Whether nearly every line of the side with fewer lines has a line of the other side at its height."""
    fewer, more = sorted((left, right), key=len)
    centres = [_centre(line) for line in more]
    paired = sum(any(abs(_centre(line) - c) <= ALIGN_TOLERANCE * height for c in centres) for line in fewer)
    return paired >= ALIGNED_ROWS * len(fewer)


def _stretches(line: list[Box], gap: float) -> list[float]:
    """Lengths of the runs of a line's boxes (left to right) whose gaps are narrower than `gap`."""
    lengths, start, end = [], line[0].x0, line[0].x1
    for box in line[1:]:
        if box.x0 - end >= gap:
            lengths.append(end - start)
            start = box.x0
        end = max(end, box.x1)
    return [*lengths, end - start]


def _side_by_side(left: list[Box], right: list[Box]) -> bool:
    shared = min(_bottom(left), _bottom(right)) - max(_top(left), _top(right))
    shorter = min(_bottom(left) - _top(left), _bottom(right) - _top(right))
    return shared >= COLUMN_OVERLAP * shorter


def group_lines(boxes: list[Box]) -> list[list[Box]]:
    """Boxes grouped into text lines, top to bottom, each left to right. A box joins the line above it when
    their vertical extents overlap by LINE_OVERLAP of the lower of the two heights (the line's extent is the
    mean of its boxes')."""
    lines: list[list[Box]] = []
    for box in sorted(boxes, key=lambda b: (b.centre, b.x0)):
        if lines and _overlap(box, lines[-1]) >= LINE_OVERLAP * min(box.height, _mean_height(lines[-1])):
            lines[-1].append(box)
        else:
            lines.append([box])
    lines.sort(key=_centre)
    return [sorted(line, key=lambda b: b.x0) for line in lines]


def _centre(line: list[Box]) -> float:
    return sum(b.centre for b in line) / len(line)


def _overlap(box: Box, line: list[Box]) -> float:
    top, bottom = sum(b.y0 for b in line) / len(line), sum(b.y1 for b in line) / len(line)
    return min(box.y1, bottom) - max(box.y0, top)


def _mean_height(line: list[Box]) -> float:
    return sum(b.height for b in line) / len(line)


def _gaps(boxes: list[Box]) -> list[Interval]:
    """The x intervals no box covers, outer ones unbounded, left to right."""
    gaps, right = [], -math.inf
    for box in sorted(boxes, key=lambda b: b.x0):
        if box.x0 > right:
            gaps.append((right, box.x0))
        right = max(right, box.x1)
    return [*gaps, (right, math.inf)]


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Intersection of two sorted lists of disjoint open intervals."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        low, high = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if low < high:
            out.append((low, high))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _gutters(free: list[Interval], boxes: list[Box], height: float) -> list[Interval]:
    """The free intervals with boxes on both sides that are at least MIN_GUTTER wide."""
    left, right = min(b.x0 for b in boxes), max(b.x1 for b in boxes)
    inner = [(max(a, left), min(b, right)) for a, b in free]
    return [(a, b) for a, b in inner if b - a >= MIN_GUTTER * height]


def _left(boxes: list[Box]) -> float:
    return min(b.x0 for b in boxes)


def _top(boxes: list[Box]) -> float:
    return min(b.y0 for b in boxes)


def _bottom(boxes: list[Box]) -> float:
    return max(b.y1 for b in boxes)
