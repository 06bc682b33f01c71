"""Character and word error rates of recognised text against ground truth, for the benchmark and the tests.

Edit distances come from `rapidfuzz` (a pinned dependency of the `test` extra, which the benchmark uses
too): Levenshtein over characters for CER, over whitespace-separated words for WER.

Three measures, one per question:
- `errors`: the lines a system reports, sorted, against the ground truth's lines, sorted: reading order is not
  measured (systems order a two-column page differently), a system that reads every line right gets 0.
- `box_errors`: the loader's text boxes matched to the ground-truth line each belongs to (a table row or a
  wide line may come as several boxes), whatever order they come in: what the recogniser got right.
- `text_errors`: the page's `text` (what users read) against the ground truth in reading order. Its gap to
  `box_errors` is what the reading order lost (columns interleaved, rows split or merged).
Whitespace inside a line is normalised to single spaces; a lost space between two words still counts
(one character for CER, two words for WER), which is why WER is reported beside CER.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations and reference lengths; summed over pages before dividing (a corpus-level rate)."""

    char_edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0
    nospace_edits: int = 0  # CER ignoring spaces: separates "words glued together" from misread letters
    nospace_chars: int = 0

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (self.char_edits, self.chars, self.word_edits, self.words, self.nospace_edits, self.nospace_chars)

    @property
    def cer(self) -> float:
        return self.char_edits / max(self.chars, 1)

    @property
    def wer(self) -> float:
        return self.word_edits / max(self.words, 1)

    @property
    def cer_nospace(self) -> float:
        return self.nospace_edits / max(self.nospace_chars, 1)


def _clean(lines: Iterable[str]) -> list[str]:
    """Lines with runs of whitespace made single spaces, empty lines dropped, order kept."""
    return [" ".join(line.split()) for line in lines if line.strip()]


def normalise(lines: Iterable[str]) -> list[str]:
    """Lines with runs of whitespace made single spaces, empty lines dropped, sorted (order-independent)."""
    return sorted(_clean(lines))


def errors(reference: Iterable[str], hypothesis: Iterable[str]) -> ErrorCounts:
    """Edit counts of `hypothesis` lines against `reference` lines (one page or document), both sorted."""
    return _counts(normalise(reference), normalise(hypothesis))


def text_errors(reference: Iterable[str], text: str) -> ErrorCounts:
    """Edit counts of a page's `text` against the `reference` lines in reading order (nothing sorted)."""
    return _counts(_clean(reference), _clean(text.splitlines()))


def box_errors(reference: Iterable[str], boxes: Iterable[str]) -> ErrorCounts:
    """Edit counts of text boxes, in any order, against the `reference` lines: each box joins the line it
    matches best, at the place it matches; a line's boxes are joined by spaces, then both sides sorted."""
    ref = _clean(reference)
    placed: list[list[tuple[int, str]]] = [[] for _ in ref]
    claimed = [0] * len(ref)  # characters of each line already matched: a short box (a table cell) prefers
    for box in sorted(_clean(boxes), key=len, reverse=True):  # the line still missing text, not a full one
        if not ref:
            placed.append([(0, box)])
            continue
        best = max(range(len(ref)), key=lambda i: (fuzz.partial_ratio(box, ref[i]), len(ref[i]) - claimed[i]))
        claimed[best] += len(box) + 1
        placed[best].append((fuzz.partial_ratio_alignment(box, ref[best]).dest_start, box))
    return errors(ref, [" ".join(box for _, box in sorted(line)) for line in placed])


def _counts(ref: list[str], hyp: list[str]) -> ErrorCounts:
    ref_text, hyp_text = "\n".join(ref), "\n".join(hyp)
    ref_words, hyp_words = ref_text.split(), hyp_text.split()
    ref_tight, hyp_tight = "".join(ref_words), "".join(hyp_words)
    return ErrorCounts(
        char_edits=Levenshtein.distance(ref_text, hyp_text), chars=len(ref_text),
        word_edits=Levenshtein.distance(ref_words, hyp_words), words=len(ref_words),
        nospace_edits=Levenshtein.distance(ref_tight, hyp_tight), nospace_chars=len(ref_tight),
    )
