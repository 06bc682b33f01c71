"""Generated document pages with known text: A4 at 150/300 dpi, 30-50 lines in several fonts and sizes,
one to three columns, some skewed a few degrees, some scanned-looking (noise, blur, JPEG) or binarized, some
with a header, a footer and a table; multi-page PDFs; tight crops of single lines and narrow receipts. For the
benchmark (`bench/run.py`) and the accuracy tests; the ground truth is kept beside each page.

Unlike `samples.py` (wide word gaps, for exact token checks) the text here is set with ordinary spaces,
as in real documents. Deterministic for a given seed. Fonts: DejaVu Sans/Serif/Mono when the system has
them (Debian `fonts-dejavu-core`), else Pillow's bundled scalable font. Never imports Paddle.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from inference_pod.local.samples import VOCABULARY

A4_INCHES = (8.27, 11.69)
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
GROUND_TRUTH_SUFFIX = ".gt.txt"  # next to each page or PDF: its text, one line per printed line
_EXTRA_WORDS = ("and", "the", "of", "for", "with", "to", "in", "on", "by", "from", "2024", "17", "305", "1.5")


@dataclass(frozen=True)
class PageStyle:
    """How one page is made. `kind` names the row of the benchmark table it belongs to."""

    kind: str
    dpi: int = 150
    layout: str = "a4"  # "a4", "line" (a tight crop of one printed line) or "receipt" (narrow, short lines)
    columns: int = 1
    rotate_degrees: tuple[float, float] = (0.0, 0.0)  # |skew| range, either sign, applied after rendering
    scanned: bool = False  # gaussian noise, slight blur, JPEG quality 60
    binarized: bool = False  # thresholded to pure black and white, as many scanners deliver
    header_footer: bool = False  # a running header above the body and a footer below it
    table_rows: int = 0  # a table-like block (short cells in fixed columns) below the body


# The benchmark's page kinds (its table rows). "pdf" pages are rendered by the loader's own PDF path.
KINDS: dict[str, PageStyle] = {
    "a4-150-clean": PageStyle("a4-150-clean"),
    "a4-150-two-column": PageStyle("a4-150-two-column", columns=2),
    "a4-150-degraded": PageStyle("a4-150-degraded", rotate_degrees=(1.0, 2.0), scanned=True),
    "a4-300-clean": PageStyle("a4-300-clean", dpi=300),
    "pdf-150": PageStyle("pdf-150"),
    # Issue 20's real-scan shapes: text a few pixels from the edge, wide and short, binarized (e.g. 2000x60).
    "line-300-tight": PageStyle("line-300-tight", dpi=300, layout="line", binarized=True),
    "receipt-200": PageStyle("receipt-200", dpi=200, layout="receipt", binarized=True),
    "a4-150-skewed": PageStyle("a4-150-skewed", columns=2, rotate_degrees=(0.5, 3.0)),
    "a4-150-three-column": PageStyle("a4-150-three-column", columns=3),
    "a4-150-report": PageStyle("a4-150-report", columns=2, header_footer=True, table_rows=6),
    "a4-300-binarized": PageStyle("a4-300-binarized", dpi=300, rotate_degrees=(0.5, 1.5), binarized=True),
}


def available_fonts() -> list[str]:
    """Paths of the system fonts used (empty: Pillow's bundled font only)."""
    return [str(d / f) for d in FONT_DIRS for f in FONT_FILES if (d / f).is_file()]


def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def _line(rng: random.Random, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """Words with ordinary single spaces, as many as fit in `width` pixels (at least 3)."""
    words: list[str] = []
    while True:
        word = rng.choice(VOCABULARY) if rng.random() < 0.75 else rng.choice(_EXTRA_WORDS)
        candidate = " ".join([*words, word])
        if len(words) >= 3 and font.getlength(candidate) > width:
            return " ".join(words)
        words.append(word)
        if len(words) >= 3 and font.getlength(" ".join(words)) > width:
            words.pop()
            return " ".join(words)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(VOCABULARY) if rng.random() < 0.75 else rng.choice(_EXTRA_WORDS) for _ in range(count))


def render_document_page(style: PageStyle, rng: random.Random) -> tuple[Image.Image, list[str]]:
    """One page and its ground-truth lines in reading order: header, columns one after another (each top to
    bottom), table rows (cells joined by one space), footer."""
    render = {"a4": _render_a4, "line": _render_line, "receipt": _render_receipt}[style.layout]
    page, truth = render(style, rng, rng.choice([*available_fonts(), None]))  # None: Pillow's own font
    low, high = style.rotate_degrees
    if high:
        # As a scanner skews a sheet: the rendered page turned, corners filled with paper.
        angle = rng.choice((-1, 1)) * rng.uniform(low, high)
        page = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=255)
    if style.scanned:
        page = _scanned(page, rng)
    if style.binarized:
        page = page.point(lambda v: 255 if v >= 128 else 0)
    return page.convert("RGB"), truth


def _render_a4(style: PageStyle, rng: random.Random, font_path: str | None) -> tuple[Image.Image, list[str]]:
    width, height = round(A4_INCHES[0] * style.dpi), round(A4_INCHES[1] * style.dpi)
    n_lines = rng.randint(30, 50)  # printed rows of the body (per column)
    extra_rows = style.table_rows + (1 if style.table_rows else 0) + (4 if style.header_footer else 0)
    margin = round(0.8 * style.dpi)
    pitch = (height - 2 * margin) // (n_lines + extra_rows)
    points = min(12.0, rng.uniform(9.5, 12.0), pitch * 72 / style.dpi / 1.35)
    font = _font(font_path, round(points * style.dpi / 72))
    gutter = round(0.3 * style.dpi)
    column_width = (width - 2 * margin - gutter * (style.columns - 1)) // style.columns

    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    truth: list[str] = []
    y = margin
    if style.header_footer:
        header = _line(rng, font, int((width - 2 * margin) * 0.6))
        draw.text((margin, y), header, fill=0, font=font)
        truth.append(header)
        y += 2 * pitch
    for column in range(style.columns):
        x = margin + column * (column_width + gutter)
        for row in range(n_lines):
            text = _line(rng, font, int(column_width * rng.uniform(0.7, 1.0)))
            draw.text((x, y + row * pitch), text, fill=0, font=font)
            truth.append(text)
    y += n_lines * pitch
    if style.table_rows:
        y += pitch
        truth += _table(draw, rng, font, (margin, y), width - 2 * margin, pitch, style.table_rows)
        y += style.table_rows * pitch
    if style.header_footer:
        footer = f"{_words(rng, 3)} page {rng.randint(2, 40)} of {rng.randint(41, 90)}"
        draw.text(((width - font.getlength(footer)) / 2, y + pitch), footer, fill=0, font=font)
        truth.append(footer)
    return page, truth


def _table(draw: ImageDraw.ImageDraw, rng: random.Random, font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
           origin: tuple[int, int], width: int, pitch: int, rows: int) -> list[str]:
    """Rows of four short cells at fixed column positions (item, quantity, price, total): a key-value block that
    must stay row-wise."""
    lines = []
    for row in range(rows):
        quantity, price = rng.randint(1, 20), rng.randint(100, 9_999) / 100
        cells = (_words(rng, rng.randint(1, 2)), str(quantity), f"{price:.2f}", f"{quantity * price:.2f}")
        for cell, share in zip(cells, (0.0, 0.45, 0.65, 0.85), strict=True):
            draw.text((origin[0] + share * width, origin[1] + row * pitch), cell, fill=0, font=font)
        lines.append(" ".join(cells))
    return lines


def _render_line(style: PageStyle, rng: random.Random, font_path: str | None) -> tuple[Image.Image, list[str]]:
    """One printed line cropped a few pixels around its ink: a wide, short image (about 2000x60 at 300 dpi)."""
    font = _font(font_path, round(rng.uniform(10.0, 12.0) * style.dpi / 72))
    text = _line(rng, font, int(style.dpi * rng.uniform(6.0, 7.0)))
    canvas = Image.new("L", (round(font.getlength(text)) + 200, font.size * 3), 255)
    ImageDraw.Draw(canvas).text((100, font.size), text, fill=0, font=font)
    left, top, right, bottom = canvas.point(lambda v: 255 - v).getbbox() or (0, 0, *canvas.size)
    pad = [rng.randint(1, 6) for _ in range(4)]
    return canvas.crop((left - pad[0], top - pad[1], right + pad[2], bottom + pad[3])), [text]


def _render_receipt(style: PageStyle, rng: random.Random, font_path: str | None) -> tuple[Image.Image, list[str]]:
    """A till receipt: 2.5 inches wide, 6-10 short lines (items with prices, a total), narrow margins."""
    font = _font(font_path, round(rng.uniform(9.0, 11.0) * style.dpi / 72))
    width, margin, pitch = round(2.5 * style.dpi), rng.randint(4, 12), round(font.size * 1.5)
    lines = [_words(rng, 2)]
    for _ in range(rng.randint(4, 8)):
        lines.append(f"{_words(rng, rng.randint(1, 2))} {rng.randint(100, 9_999) / 100:.2f}")
    lines.append(f"TOTAL {rng.randint(1_000, 99_999) / 100:.2f}")
    page = Image.new("L", (width, 2 * margin + pitch * len(lines)), 255)
    draw = ImageDraw.Draw(page)
    for row, text in enumerate(lines):
        draw.text((margin, margin + row * pitch), text, fill=0, font=font)
    return page, lines


def _scanned(page: Image.Image, rng: random.Random) -> Image.Image:
    """Slight blur, sensor noise (seeded), then JPEG at quality 60: what a cheap office scan looks like."""
    import numpy as np

    page = page.filter(ImageFilter.GaussianBlur(radius=0.7))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 14.0, size=(page.height, page.width))
    noisy = np.clip(np.asarray(page, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy, "L").save(buffer, "JPEG", quality=60)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def generate_documents(dest: Path, counts: dict[str, int], seed: int = 2026) -> dict[str, list[str]]:
    """Write pages of each kind in `counts` (kind -> pages) into `dest/<kind>/`, with ground truth beside.

    Images are PNG (JPEG for scanned ones); kind "pdf-150" writes 2-page PDFs (counts are pages) whose
    pages the loader renders itself. Returns {relative path: ground-truth lines}.
    """
    out: dict[str, list[str]] = {}
    for kind, count in counts.items():
        style = KINDS[kind]
        rng = random.Random(f"{seed}-{kind}")
        folder = Path(dest) / kind
        folder.mkdir(parents=True, exist_ok=True)
        if kind.startswith("pdf"):
            for index in range(0, count, 2):
                pages = [render_document_page(style, rng) for _ in range(min(2, count - index))]
                name = f"{kind}/doc-{index // 2:04d}.pdf"
                fixed = time.gmtime(1704067200)  # reproducible bytes (Pillow stamps "now" otherwise)
                pages[0][0].save(Path(dest) / name, "PDF", save_all=True, append_images=[p for p, _ in pages[1:]],
                                 resolution=float(style.dpi), creationDate=fixed, modDate=fixed)
                out[name] = [line for _, lines in pages for line in lines]
        else:
            for index in range(count):
                image, lines = render_document_page(style, rng)
                suffix = ".jpg" if style.scanned else ".png"
                name = f"{kind}/page-{index:04d}{suffix}"
                image.save(Path(dest) / name, "JPEG" if style.scanned else "PNG",
                           **({"quality": 60} if style.scanned else {}))
                out[name] = lines
        for name, lines in out.items():
            if name.startswith(f"{kind}/"):
                (Path(dest) / (name + GROUND_TRUTH_SUFFIX)).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def read_ground_truth(path: Path) -> list[str]:
    """The ground-truth lines written beside the page or PDF `path`."""
    text = Path(str(path) + GROUND_TRUTH_SUFFIX).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
