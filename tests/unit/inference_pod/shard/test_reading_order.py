"""Reading order on synthetic pages: known line boxes laid out, rotated about the page centre, rounded to
whole pixels as PaddleOCR returns them; the page text must come back in the known order."""

from __future__ import annotations

import math
import random

import pytest

from inference_pod.shard import reading_order, results

PAGE_W, PAGE_H = 1400, 1754  # a little wider than an A4 page at 150 dpi, so 1240 px lines fit
MARGIN = 80
LINE_W = 1240  # full-width line: a 2 degree skew moves its end 43 px, more than PITCH
PITCH = 30  # tight line pitch
LINE_H = 22  # box height, so 8 px of whitespace between lines
WORD_GAP = 12  # between word boxes of one line: about half a box height
GUTTER = 40  # between columns
SKEWS = [-3.0, -2.0, -1.3, -0.5, 0.5, 1.3, 2.0, 3.0]

Spec = tuple[str, float, float, float, float]  # text, x, y, width, height in the unskewed page


def rotate(specs: list[Spec], degrees: float) -> list[dict]:
    """PaddleOCR-like lines: each box's corners (top-left, top-right, bottom-right, bottom-left) rotated by
    `degrees` about the page centre (positive: text runs down to the right), rounded to pixels."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    cx, cy = PAGE_W / 2, PAGE_H / 2

    def turn(x: float, y: float) -> list[int]:
        return [round(cx + (x - cx) * cos - (y - cy) * sin), round(cy + (x - cx) * sin + (y - cy) * cos)]

    return [
        {"text": text, "score": 0.9, "polygon": [turn(x, y), turn(x + w, y), turn(x + w, y + h), turn(x, y + h)]}
        for text, x, y, w, h in specs
    ]


def column(name: str, x: float, width: float, lines: int, top: float = MARGIN) -> list[Spec]:
    """`lines` boxes `width` wide at x, one per PITCH from `top`, named name00, name01, ..."""
    return [(f"{name}{i:02d}", x, top + i * PITCH, width, LINE_H) for i in range(lines)]


def words(specs: list[Spec], count: int) -> list[Spec]:
    """Each box cut into `count` word boxes WORD_GAP apart, named line.0, line.1, ..."""
    out = []
    for text, x, y, w, h in specs:
        word_w = (w - WORD_GAP * (count - 1)) / count
        out += [(f"{text}.{k}", x + k * (word_w + WORD_GAP), y, word_w, h) for k in range(count)]
    return out


def text(lines: list[dict]) -> str:
    return results.reading_order_text(lines)


def expected(*parts: list[Spec], per_line: int = 1) -> str:
    """The texts of `parts` in order, `per_line` boxes a row."""
    texts = [spec[0] for part in parts for spec in part]
    return "\n".join(" ".join(texts[i:i + per_line]) for i in range(0, len(texts), per_line))


def shuffled(lines: list[dict], seed: int = 7) -> list[dict]:
    """The same boxes in another order, as a detector may list them."""
    lines = list(lines)
    random.Random(seed).shuffle(lines)
    return lines


@pytest.mark.parametrize("skew", SKEWS)
def test_skew_is_recovered_from_the_boxes(skew: float) -> None:
    lines = rotate(column("l", MARGIN, LINE_W, 40), skew)
    assert reading_order.estimate_skew([line["polygon"] for line in lines]) == pytest.approx(skew, abs=0.05)


@pytest.mark.parametrize("skew", SKEWS)
def test_skewed_page_with_tight_line_pitch_reads_line_by_line(skew: float) -> None:
    body = column("l", MARGIN, LINE_W, 50)
    assert text(shuffled(rotate(body, skew))) == expected(body)


@pytest.mark.parametrize("skew", SKEWS)
def test_skewed_lines_cut_into_words_join_in_order(skew: float) -> None:
    body = words(column("l", MARGIN, LINE_W, 50), 6)
    assert text(shuffled(rotate(body, skew))) == expected(body, per_line=6)


def test_corner_order_and_rotated_quads_do_not_change_the_estimate() -> None:
    lines = rotate(column("l", MARGIN, LINE_W, 10), 2.0)
    scrambled = [[p[2], p[0], p[3], p[1]] for p in (line["polygon"] for line in lines)]  # crossed order
    assert reading_order.estimate_skew(scrambled) == pytest.approx(2.0, abs=0.05)


def test_no_elongated_box_or_a_steep_angle_means_no_skew() -> None:
    squares = [[[x, 0], [x + 20, 0], [x + 20, 20], [x, 20]] for x in range(0, 200, 40)]
    assert reading_order.estimate_skew(squares) == 0.0
    steep = rotate(column("l", MARGIN, 600, 10), 30.0)
    assert reading_order.estimate_skew([line["polygon"] for line in steep]) == 0.0


@pytest.mark.parametrize("skew", [0.0, 1.5, -2.0])
def test_two_columns_are_read_column_by_column(skew: float) -> None:
    width = (LINE_W - GUTTER) / 2
    left = column("a", MARGIN, width, 40)
    right = column("b", MARGIN + width + GUTTER, width, 40)
    assert text(shuffled(rotate(left + right, skew))) == expected(left, right)


def test_three_columns_are_read_column_by_column() -> None:
    width = (LINE_W - 2 * GUTTER) / 3
    parts = [column(name, MARGIN + k * (width + GUTTER), width, 30) for k, name in enumerate("abc")]
    assert text(shuffled(rotate([spec for part in parts for spec in part], 1.0))) == expected(*parts)


def test_columns_of_different_lengths_and_word_boxes() -> None:
    width = (LINE_W - GUTTER) / 2
    left = words(column("a", MARGIN, width, 25), 3)
    right = words(column("b", MARGIN + width + GUTTER, width, 18), 3)
    assert text(rotate(left + right, -1.0)) == expected(left, right, per_line=3)


def test_header_spanning_both_columns_comes_first_and_footer_last() -> None:
    width = (LINE_W - GUTTER) / 2
    header = [("Title of the paper", MARGIN + 300, MARGIN, 640, LINE_H)]  # centred over the gutter
    left = column("a", MARGIN, width, 30, top=MARGIN + PITCH)
    right = column("b", MARGIN + width + GUTTER, width, 30, top=MARGIN + PITCH)
    footer = [("page footer", MARGIN, MARGIN + 31 * PITCH, LINE_W, LINE_H)]
    assert text(shuffled(rotate(header + left + right + footer, 1.3))) == expected(header, left, right, footer)


def test_a_corner_header_well_above_the_columns_comes_first() -> None:
    width = (LINE_W - GUTTER) / 2
    header = [("12 March 2024", MARGIN + LINE_W - 200, MARGIN, 200, LINE_H)]  # over the right column only
    left = column("a", MARGIN, width, 20, top=MARGIN + 4 * PITCH)
    right = column("b", MARGIN + width + GUTTER, width, 20, top=MARGIN + 4 * PITCH)
    assert text(rotate(header + left + right, 0.8)) == expected(header, left, right)


def test_ragged_single_column_is_not_split_into_columns() -> None:
    rng = random.Random(3)
    body = [(f"l{i:02d}", MARGIN, MARGIN + i * PITCH, rng.choice([120, 300, 640, 900, LINE_W]), LINE_H)
            for i in range(40)]
    body += [("signature", MARGIN + 900, MARGIN + 40 * PITCH, 300, LINE_H)]  # right-aligned after short lines
    assert text(shuffled(rotate(body, 1.3))) == expected(body)


def test_blocks_one_above_the_other_are_not_columns() -> None:
    sender = column("s", MARGIN + 800, 440, 4)  # a letter: sender right, then recipient left, then the body
    recipient = column("r", MARGIN, 440, 4, top=MARGIN + 4 * PITCH)
    body = column("l", MARGIN, LINE_W, 10, top=MARGIN + 8 * PITCH)
    assert text(rotate(sender + recipient + body, -1.3)) == expected(sender, recipient, body)


def test_key_value_block_and_table_are_read_row_by_row() -> None:
    rows = [(f"key{i}", MARGIN, MARGIN + i * PITCH, 140, LINE_H) for i in range(8)]
    values = [(f"value{i}", MARGIN + 400, MARGIN + i * PITCH, 260, LINE_H) for i in range(8)]
    table = [(f"c{i}{k}", MARGIN + k * 300, MARGIN + (10 + i) * PITCH, 180, LINE_H) for i in range(6) for k in range(4)]
    lines = rotate(rows + values + table, 2.0)
    assert text(shuffled(lines)) == "\n".join(
        [f"key{i} value{i}" for i in range(8)] + [" ".join(f"c{i}{k}" for k in range(4)) for i in range(6)]
    )


def test_empty_page_and_one_box() -> None:
    assert text([]) == ""
    assert text(rotate([("alone", 300, 300, 200, LINE_H)], 1.0)) == "alone"
    assert reading_order.reading_order([]) == []


def test_boxes_without_polygons_come_last_in_their_given_order() -> None:
    lines = rotate(column("l", MARGIN, LINE_W, 3), 1.0)
    lines = [{"text": "x", "score": 0.5}, *lines, {"text": "y", "score": 0.5, "polygon": []}]
    assert text(lines) == "l00\nl01\nl02\nx\ny"
    assert reading_order.reading_order([None, [[0, 0], [9, 0], [9, 3], [0, 3]]]) == [[1], [0]]


def test_degenerate_boxes_join_their_line() -> None:
    flat = {"text": "flat", "score": 0.5, "polygon": [[700, 121], [760, 121], [760, 121], [700, 121]]}
    point = {"text": "point", "score": 0.5, "polygon": [[900, 120]]}
    lines = [*rotate(words(column("l", MARGIN, 600, 4), 2), 0.0), flat, point]
    assert text(lines) == "l00.0 l00.1\nl01.0 l01.1 flat point\nl02.0 l02.1\nl03.0 l03.1"


def test_every_box_is_placed_once() -> None:
    width = (LINE_W - GUTTER) / 2
    specs = words(column("a", MARGIN, width, 20), 3) + column("b", MARGIN + width + GUTTER, width, 15)
    polygons = [line["polygon"] for line in rotate(specs, 1.7)] + [None]
    rows = reading_order.reading_order(polygons)
    assert sorted(i for row in rows for i in row) == list(range(len(polygons)))


# Prose columns versus tables, at the sizes where a fixed line length in box heights failed: 12-pt columns
# measure 9-11 box heights a line (two columns) or 5-7 (three), table cells can be as long.
def ragged(name: str, x: float, width: float, lines: int, seed: int, top: float = MARGIN,
           pitch: float = PITCH) -> list[Spec]:
    """Prose lines of a column `width` wide: 70-100 % full, as set text ending at a word."""
    rng = random.Random(f"{name}{seed}")
    return [(f"{name}{i:02d}", x, top + i * pitch, width * rng.uniform(0.7, 1.0), LINE_H) for i in range(lines)]


@pytest.mark.parametrize("skew", [-2.5, -1.3, 0.0, 0.7, 2.0])
def test_narrow_prose_columns_on_a_skewed_page_are_read_column_by_column(skew: float) -> None:
    width, gutter = 240, 36  # lines 7.6-11 box heights, the gutter 1.6: the skewed 12-pt pages of the corpus
    left = ragged("a", MARGIN, width, 35, seed=1)
    right = ragged("b", MARGIN + width + gutter, width, 35, seed=2)
    assert text(shuffled(rotate(left + right, skew))) == expected(left, right)


@pytest.mark.parametrize(("skew", "gutter"), [(-1.5, 36), (0.0, 36), (1.0, 36), (0.5, 20), (-2.0, 20)])
def test_three_narrow_prose_columns_are_read_column_by_column(skew: float, gutter: float) -> None:
    # Lines of 5-7 box heights, 4 gutters of 1.6 box heights: the three-column pages of the corpus; their gutters
    # measure 0.9 box heights where the detector's boxes are tall for 12-pt text (20 px here).
    width = 160
    parts = [ragged(name, MARGIN + k * (width + gutter), width, 40, seed=k) for k, name in enumerate("abc")]
    assert text(shuffled(rotate([spec for part in parts for spec in part], skew))) == expected(*parts)


def test_columns_set_independently_are_read_column_by_column_beside_a_wide_gutter() -> None:
    # Lines of 4-5 box heights, a gutter of 3: as short next to the gutter as table cells, but the rows of the two
    # sides do not line up (another line pitch), which a table's must.
    left = ragged("a", MARGIN, 110, 30, seed=3)
    right = ragged("b", MARGIN + 110 + 66, 110, 24, seed=4, pitch=37)
    assert text(shuffled(rotate(left + right, 1.0))) == expected(left, right)


def test_two_column_table_with_short_cells_is_read_row_by_row() -> None:
    rng = random.Random(5)
    rows = [[(f"item{i}", MARGIN, MARGIN + i * PITCH, rng.uniform(60, 110), LINE_H),  # 3-5 box heights
             (f"{i}.00", MARGIN + 150, MARGIN + i * PITCH, 70, LINE_H)]  # 3 box heights, 1.8-4 from the items
            for i in range(12)]
    specs = [cell for row in rows for cell in row]
    assert text(shuffled(rotate(specs, -1.3))) == expected(specs, per_line=2)


def test_form_with_tall_values_beside_short_labels_is_read_row_by_row() -> None:
    # Handwritten values in taller boxes than their printed labels: the centres of a row sit apart by more than
    # ALIGN_TOLERANCE, so the rows do not read as aligned; the labels are still too short to be running text.
    labels = [(f"label{i}", MARGIN, MARGIN + i * 50, 70, LINE_H) for i in range(8)]
    values = [(f"value{i}", MARGIN + 160, MARGIN + i * 50, 300, 40) for i in range(8)]
    assert text(shuffled(rotate(labels + values, 0.5))) == "\n".join(f"label{i} value{i}" for i in range(8))


def test_table_with_a_long_description_column_is_read_row_by_row() -> None:
    # Descriptions up to 12 box heights, the amounts 2 box heights beyond the longest: each left line alone is as
    # long as a line of a prose column, but the rows line up and the amounts are short next to the gutter.
    rng = random.Random(6)
    left, amounts = MARGIN, MARGIN + 264 + 44
    rows = [[(f"description{i}", left, MARGIN + i * PITCH, rng.uniform(180, 264), LINE_H),
             (f"qty{i}", amounts, MARGIN + i * PITCH, 70, LINE_H),
             (f"total{i}", amounts + 110, MARGIN + i * PITCH, 90, LINE_H)] for i in range(10)]
    wrapped = ("wrapped", left, MARGIN + 10 * PITCH, 200, LINE_H)  # the last description runs over two lines
    specs = [cell for row in rows for cell in row] + [wrapped]
    assert text(shuffled(rotate(specs, 1.5))) == expected(specs[:-1], per_line=3) + "\nwrapped"


def test_single_column_with_an_indented_list_is_read_line_by_line() -> None:
    rng = random.Random(8)
    intro = ragged("p", MARGIN, LINE_W, 4, seed=8)
    items = []
    for i in range(6):  # a bullet, a gutter of 1.6 box heights, the item's text
        y = MARGIN + (4 + i) * PITCH
        items += [(f"bullet{i}", MARGIN + 40, y, 14, LINE_H),
                  (f"item{i}", MARGIN + 90, y, rng.uniform(300, 1100), LINE_H)]
    outro = ragged("q", MARGIN, LINE_W, 4, seed=9, top=MARGIN + 10 * PITCH)
    assert text(shuffled(rotate(intro + items + outro, -0.8))) == "\n".join(
        [expected(intro), expected(items, per_line=2), expected(outro)])


def test_table_below_two_columns_that_leaves_their_gutter_free_is_read_after_them() -> None:
    left = ragged("a", MARGIN, 560, 20, seed=10)
    right = ragged("b", MARGIN + 600, 560, 20, seed=11)
    top = MARGIN + 21 * PITCH  # after a blank row: closer than BLOCK_GAP, so in the columns' run
    table = [(f"t{i}{k}", MARGIN + x, top + i * PITCH, w, LINE_H) for i in range(6)
             for k, (x, w) in enumerate([(0, 150), (420, 60), (720, 60), (1020, 90)])]  # the gutter stays free
    assert text(shuffled(rotate(left + right + table, 1.0))) == "\n".join(
        [expected(left, right), expected(table, per_line=4)])
