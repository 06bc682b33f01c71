"""Generated documents with known words, for `ocrjob demo`, the tests and the benchmarks.

Everything here is deterministic (same arguments, same bytes) and needs no system fonts: Pillow's
``ImageFont.load_default(size=...)`` is a scalable font bundled with Pillow. Pages are black text on
white, large enough (40 px font) that PP-OCRv4 mobile recognises every word. Words are drawn one by one
with a wide gap, because the recogniser drops the narrow space of the default font and would otherwise
return ``"TotalAmount"`` for ``"Total Amount"``: tests can then compare whitespace-separated tokens.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PAGE_SIZE = (1000, 700)
_MARGIN = 60
_MAX_FONT = 40
_MIN_FONT = 18

# Plain English words, upper and lower case: the PP-OCRv4 mobile recogniser (a Chinese+English
# dictionary) reads these reliably at the sizes used here. No look-alike pairs such as "l"/"I" alone.
VOCABULARY: tuple[str, ...] = (
    "Invoice", "Total", "Amount", "Delivery", "Address", "Customer", "Payment", "Order", "Number",
    "Date", "Account", "Balance", "Contract", "Service", "Report", "Summary", "Office", "Market",
    "Garden", "Window", "Bridge", "Harbor", "Forest", "Mountain", "River", "Valley", "Station",
    "Library", "Museum", "Theater", "Kitchen", "Bottle", "Camera", "Doctor", "Engine", "Flower",
    "Golden", "Hammer", "Island", "Jacket", "Ladder", "Mirror", "Needle", "Orange", "Pepper",
    "Quartz", "Rocket", "Silver", "Tomato", "Umbrella", "Violet", "Wagon", "Yellow", "Zebra",
    "apple", "butter", "candle", "dragon", "eleven", "falcon", "guitar", "helmet", "insect",
    "jungle", "kettle", "lemon", "magnet", "napkin", "oyster", "pillow", "rabbit", "saddle",
    "ticket", "velvet", "walnut", "yogurt", "planet", "winter", "summer", "spring", "autumn",
    "monday", "friday", "weekend", "morning", "evening", "history", "science", "student",
    "teacher", "village", "capital", "country", "machine", "network", "printer", "storage",
    "INVOICE", "TOTAL", "PAYMENT", "SHIPPING", "RECEIPT", "WAREHOUSE", "CUSTOMS", "PACKAGE",
)


def _word_gap(font_size: int) -> int:
    # 1.5 em between words: the detector then boxes each word on its own. With a normal-width space the
    # recogniser (trained mostly on Chinese, which has no spaces) often glues words together.
    return int(font_size * 1.5)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _line_width(words: list[str], font: ImageFont.FreeTypeFont | ImageFont.ImageFont, gap: int) -> float:
    return sum(font.getlength(word) for word in words) + gap * max(len(words) - 1, 0)


def render_page(lines: list[str], size: tuple[int, int] = PAGE_SIZE) -> Image.Image:
    """Render `lines` as black text on a white RGB page, shrinking the font only if a line would not fit."""
    width, height = size
    split = [line.split() for line in lines]
    font_size = _MAX_FONT
    while font_size > _MIN_FONT:
        font = _font(font_size)
        gap = _word_gap(font_size)
        fits_wide = all(_line_width(words, font, gap) <= width - 2 * _MARGIN for words in split)
        fits_high = _MARGIN + len(lines) * int(font_size * 2.2) <= height
        if fits_wide and fits_high:
            break
        font_size -= 2
    font = _font(font_size)
    gap = _word_gap(font_size)
    step = int(font_size * 2.2)  # generous leading keeps detection boxes of adjacent lines apart

    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    y = _MARGIN
    for words in split:
        x = float(_MARGIN)
        for word in words:
            draw.text((x, y), word, fill="black", font=font)
            x += font.getlength(word) + gap
        y += step
    return page


def _page_lines(rng: random.Random, n_lines: int, per_line: tuple[int, int] = (2, 3)) -> list[str]:
    return [" ".join(rng.sample(VOCABULARY, rng.randint(*per_line))) for _ in range(n_lines)]


def _words(lines: list[str]) -> list[str]:
    return [word for line in lines for word in line.split()]


def generate_samples(dest: Path) -> dict[str, list[str]]:
    """Write the demo set into `dest`; return {relative file name: expected words} (empty for the corrupt file).

    The set covers each input kind the loader handles: PNG, JPEG, a 2-page PDF, a 2-page TIFF, a file in a
    subfolder and one corrupt file (which must become an error record, not fail the shard).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    expected: dict[str, list[str]] = {}

    singles = {
        "invoice.png": ["INVOICE Number 4821", "Customer Garden Office", "Total Amount Balance"],
        "letter.jpg": ["Dear Doctor Silver", "Delivery Address Harbor Station", "friday morning"],
        "receipts/receipt.png": ["RECEIPT Kitchen Market", "apple butter lemon", "PAYMENT Account"],
        "notes/report.jpg": ["Report Summary", "history science student", "Mountain River Valley"],
    }
    for name, lines in singles.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        page = render_page(lines)
        if name.endswith(".jpg"):
            page.save(path, "JPEG", quality=90)
        else:
            page.save(path, "PNG")
        expected[name] = _words(lines)

    pdf_pages = [["Contract Service Order", "Museum Library Theater"], ["Bridge Forest Island", "Rocket Engine"]]
    pages = [render_page(lines) for lines in pdf_pages]
    fixed = time.gmtime(1704067200)  # 2024-01-01: Pillow stamps "now" otherwise; keep the bytes reproducible
    pages[0].save(
        dest / "contract.pdf", "PDF", save_all=True, append_images=pages[1:], resolution=100.0,
        creationDate=fixed, modDate=fixed,
    )
    expected["contract.pdf"] = _words([line for lines in pdf_pages for line in lines])

    tiff_pages = [["SHIPPING WAREHOUSE", "Package Camera Bottle"], ["CUSTOMS Ticket", "Violet Yellow Orange"]]
    pages = [render_page(lines) for lines in tiff_pages]
    pages[0].save(dest / "scan.tiff", "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    expected["scan.tiff"] = _words([line for lines in tiff_pages for line in lines])

    # A PNG signature followed by garbage: looks like an image by name and magic, fails to decode.
    rng = random.Random(1234)
    (dest / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(512)))
    expected["broken.png"] = []
    return expected


def generate_corpus(
    dest: Path, count: int, seed: int = 0, size: tuple[int, int] = PAGE_SIZE
) -> dict[str, list[str]]:
    """Write `count` single-page documents (PNG and JPEG, 3-5 lines of random vocabulary words) into `dest`.

    `size` is the page size in pixels; smaller pages OCR faster (benchmarks and end-to-end tests on CPU).

    Returns {relative file name: expected words}. Deterministic for a given (count, seed).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    expected: dict[str, list[str]] = {}
    for index in range(count):
        lines = _page_lines(rng, rng.randint(3, 5))
        page = render_page(lines, size=size)
        if index % 2:
            name = f"doc-{index:05d}.jpg"
            page.save(dest / name, "JPEG", quality=90)
        else:
            name = f"doc-{index:05d}.png"
            page.save(dest / name, "PNG", compress_level=1)  # fast to write; size is not the point here
        expected[name] = _words(lines)
    return expected
