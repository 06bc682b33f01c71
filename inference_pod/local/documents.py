"""Generated document pages with known text: A4 at 150/300 dpi, 30-50 lines in several fonts and sizes,
one or two columns, some rotated a few degrees, some scanned-looking (noise, blur, JPEG), and multi-page
PDFs. For the benchmark (`bench/run.py`) and the accuracy tests; the ground truth is kept beside each page.

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
    columns: int = 1
    rotate_degrees: float = 0.0
    scanned: bool = False  # gaussian noise, slight blur, JPEG quality 60


# The benchmark's page kinds (its table rows). "pdf" pages are rendered by the loader's own PDF path.
KINDS: dict[str, PageStyle] = {
    "a4-150-clean": PageStyle("a4-150-clean"),
    "a4-150-two-column": PageStyle("a4-150-two-column", columns=2),
    "a4-150-degraded": PageStyle("a4-150-degraded", rotate_degrees=2.0, scanned=True),
    "a4-300-clean": PageStyle("a4-300-clean", dpi=300),
    "pdf-150": PageStyle("pdf-150"),
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


def render_document_page(style: PageStyle, rng: random.Random) -> tuple[Image.Image, list[str]]:
    """One A4 page and its ground-truth lines (column by column, top to bottom)."""
    width, height = round(A4_INCHES[0] * style.dpi), round(A4_INCHES[1] * style.dpi)
    fonts = [*available_fonts(), None]
    font_path = rng.choice(fonts)
    n_lines = rng.randint(30, 50)  # printed rows (per column)
    margin = round(0.8 * style.dpi)
    pitch = (height - 2 * margin) // n_lines
    points = min(12.0, rng.uniform(9.5, 12.0), pitch * 72 / style.dpi / 1.35)
    font = _font(font_path, round(points * style.dpi / 72))
    gutter = round(0.3 * style.dpi)
    column_width = (width - 2 * margin - gutter * (style.columns - 1)) // style.columns

    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    truth: list[str] = []
    for column in range(style.columns):
        x = margin + column * (column_width + gutter)
        for row in range(n_lines):
            text = _line(rng, font, int(column_width * rng.uniform(0.7, 1.0)))
            draw.text((x, margin + row * pitch), text, fill=0, font=font)
            truth.append(text)
    if style.rotate_degrees:
        angle = rng.choice((-1, 1)) * rng.uniform(0.5, 1.0) * style.rotate_degrees
        page = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=255)
    if style.scanned:
        page = _scanned(page, rng)
    return page.convert("RGB"), truth


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
