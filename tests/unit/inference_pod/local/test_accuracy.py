"""The three accuracy measures: sorted lines, boxes matched in any order, page text in reading order."""

from __future__ import annotations

from inference_pod.local.accuracy import box_errors, errors, text_errors

TRUTH = ["Total jungle 16 23.18 370.88", "alpha beta 17 gamma", "x y z"]


def test_boxes_are_matched_to_their_lines_whatever_their_order_and_split() -> None:
    boxes = ["x y z", "16", "Total jungle", "370.88", "23.18", "alpha beta 17 gamma"]  # a table row in four cells
    assert box_errors(TRUTH, boxes).char_edits == 0


def test_a_missing_box_costs_its_characters() -> None:
    counts = box_errors(TRUTH, ["Total jungle 16 23.18 370.88", "alpha beta 17 gamma"])
    assert counts.char_edits == len("x y z") + 1  # the line and its separator


def test_page_text_is_measured_in_reading_order() -> None:
    in_order = "Total jungle 16 23.18 370.88\nalpha  beta 17 gamma\nx y z"
    assert text_errors(TRUTH, in_order).char_edits == 0
    out_of_order = "x y z\nTotal jungle 16 23.18 370.88\nalpha beta 17 gamma"
    assert text_errors(TRUTH, out_of_order).char_edits > 0
    assert errors(TRUTH, out_of_order.splitlines()).char_edits == 0  # the sorted measure does not see order
