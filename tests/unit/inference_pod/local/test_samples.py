"""Generated sample documents: the right files, pages and words, the same bytes every time."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pypdfium2
import pytest
from PIL import Image, ImageSequence

from inference_pod.local.samples import PAGE_SIZE, VOCABULARY, generate_corpus, generate_samples, render_page


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_render_page_is_black_text_on_white() -> None:
    page = render_page(["Invoice Total", "apple butter"])
    assert page.mode == "RGB" and page.size == PAGE_SIZE
    pixels = np.asarray(page)
    assert pixels.max() == 255 and pixels.min() == 0
    assert (pixels == 255).all(axis=2).mean() > 0.9  # mostly white paper
    assert render_page(["x"], size=(400, 300)).size == (400, 300)


def test_render_page_shrinks_the_font_to_fit_long_lines() -> None:
    long_line = " ".join(VOCABULARY[:8])
    pixels = np.asarray(render_page([long_line]))
    ink_columns = np.nonzero((pixels < 128).any(axis=(0, 2)))[0]
    assert ink_columns.max() < PAGE_SIZE[0] - 30  # nothing drawn past the right margin


def test_generate_samples_writes_the_demo_set(tmp_path: Path) -> None:
    expected = generate_samples(tmp_path)
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert files == set(expected)
    assert {Path(name).suffix for name in expected} == {".png", ".jpg", ".pdf", ".tiff"}
    assert any("/" in name for name in expected)  # nested keys exercise the key mapping
    assert expected["broken.png"] == []
    assert all(expected[name] for name in expected if name != "broken.png")

    assert len(pypdfium2.PdfDocument(tmp_path / "contract.pdf")) == 2
    with Image.open(tmp_path / "scan.tiff") as tiff:
        assert sum(1 for _ in ImageSequence.Iterator(tiff)) == 2
    with Image.open(tmp_path / "letter.jpg") as jpeg:
        assert jpeg.format == "JPEG"
    with pytest.raises(Exception), Image.open(tmp_path / "broken.png") as broken:  # noqa: B017 - any decode error
        broken.load()


def test_generate_samples_is_deterministic(tmp_path: Path) -> None:
    first = generate_samples(tmp_path / "a")
    second = generate_samples(tmp_path / "b")
    assert first == second
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


def test_generate_corpus(tmp_path: Path) -> None:
    expected = generate_corpus(tmp_path / "c", 6, seed=3)
    assert len(expected) == 6 and sorted(expected) == sorted(p.name for p in (tmp_path / "c").iterdir())
    assert {Path(name).suffix for name in expected} == {".png", ".jpg"}
    for words in expected.values():
        assert 6 <= len(words) <= 15 and set(words) <= set(VOCABULARY)
    assert generate_corpus(tmp_path / "d", 6, seed=3) == expected
    assert _digests(tmp_path / "c") == _digests(tmp_path / "d")
    assert generate_corpus(tmp_path / "e", 6, seed=4) != expected
    assert generate_corpus(tmp_path / "f", 0) == {}
    with pytest.raises(ValueError, match="count"):
        generate_corpus(tmp_path / "g", -1)
