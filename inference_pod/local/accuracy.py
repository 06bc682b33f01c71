"""Character and word error rates of recognised text against ground truth, for the benchmark and the tests.

Edit distances come from `rapidfuzz` (a pinned dependency of the `test` extra, which the benchmark uses
too): Levenshtein over characters for CER, over whitespace-separated words for WER.

Reading order is not what is measured: systems order the lines of a two-column or rotated page
differently (column by column, or row by row across both columns). So both sides are compared as their
lines sorted, one line per row; a system that reads every line right gets 0 whatever order it reports.
Whitespace inside a line is normalised to single spaces; a lost space between two words still counts
(one character for CER, two words for WER), which is why WER is reported beside CER.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


def normalise(lines: Iterable[str]) -> list[str]:
    """Lines with runs of whitespace made single spaces, empty lines dropped, sorted (order-independent)."""
    return sorted(" ".join(line.split()) for line in lines if line.strip())


def errors(reference: Iterable[str], hypothesis: Iterable[str]) -> ErrorCounts:
    """Edit counts of `hypothesis` lines against `reference` lines (one page or document)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    ref_text, hyp_text = "\n".join(ref), "\n".join(hyp)
    ref_words, hyp_words = ref_text.split(), hyp_text.split()
    ref_tight, hyp_tight = "".join(ref_words), "".join(hyp_words)
    return ErrorCounts(
        char_edits=Levenshtein.distance(ref_text, hyp_text), chars=len(ref_text),
        word_edits=Levenshtein.distance(ref_words, hyp_words), words=len(ref_words),
        nospace_edits=Levenshtein.distance(ref_tight, hyp_tight), nospace_chars=len(ref_tight),
    )
