from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from inference_pod.shard import decode
from inference_pod.shard.decode import DecodeLimits, ItemError, open_document


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


RED = Image.new("RGB", (120, 80), (250, 10, 10))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP", "TIFF"])
def test_image_formats_decode_to_rgb(fmt: str) -> None:
    document = open_document(encoded(RED, fmt), DecodeLimits())
    pages = list(document.pages)
    assert document.page_count == 1 and len(pages) == 1
    assert pages[0].shape == (80, 120, 3) and pages[0].dtype == np.uint8
    assert pages[0][40, 60, 0] > 200 and pages[0][40, 60, 2] < 60  # red stays red: RGB, not BGR


def test_every_tiff_and_pdf_page_is_read() -> None:
    blue = Image.new("RGB", (120, 80), (0, 0, 250))
    tiff = open_document(encoded(RED, "TIFF", save_all=True, append_images=[blue, RED]), DecodeLimits())
    assert tiff.page_count == 3 and len(list(tiff.pages)) == 3
    pdf = open_document(encoded(RED, "PDF", save_all=True, append_images=[blue]), DecodeLimits(pdf_dpi=72))
    pages = list(pdf.pages)
    assert pdf.kind == "pdf" and len(pages) == 2
    assert pages[1][10, 10, 2] > 200 and pages[1][10, 10, 0] < 60


def test_format_comes_from_content_not_name() -> None:
    assert open_document(encoded(RED, "PNG"), DecodeLimits()).kind == "png"
    with pytest.raises(ItemError) as info:
        open_document(b"%!PS-Adobe-3.0 not a supported format", DecodeLimits())
    assert info.value.code == decode.UNSUPPORTED_FORMAT


def test_corrupt_files_are_item_errors() -> None:
    truncated = encoded(RED, "PNG")[:60]
    with pytest.raises(ItemError) as info:
        list(open_document(truncated, DecodeLimits()).pages)
    assert info.value.code == decode.CORRUPT
    with pytest.raises(ItemError) as info:
        open_document(b"%PDF-1.7 garbage garbage", DecodeLimits())
    assert info.value.code == decode.CORRUPT


def test_empty_and_oversized_objects() -> None:
    with pytest.raises(ItemError) as info:
        open_document(b"", DecodeLimits())
    assert info.value.code == decode.EMPTY
    with pytest.raises(ItemError) as info:
        open_document(encoded(RED, "PNG"), DecodeLimits(max_item_bytes=100))
    assert info.value.code == decode.TOO_LARGE


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG declaring a huge canvas: the classic decompression bomb."""
    import struct

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = zlib.compress(b"\x00" * 1024)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ItemError) as info:
        open_document(_png_header_only(30_000, 30_000), DecodeLimits())
    assert info.value.code == decode.DECOMPRESSION_BOMB


def test_pixel_limit_is_enforced_for_images_and_pdf_pages() -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    with pytest.raises(ItemError) as info:
        open_document(encoded(noisy, "PNG"), DecodeLimits(max_pixels=10_000))
    assert info.value.code == decode.PIXEL_LIMIT
    pdf = open_document(encoded(RED, "PDF"), DecodeLimits(max_pixels=1_000, pdf_dpi=300))
    with pytest.raises(ItemError) as info:
        list(pdf.pages)
    assert info.value.code == decode.PIXEL_LIMIT and "pdfDpi" in info.value.message


def test_page_count_limit() -> None:
    with pytest.raises(ItemError) as info:
        open_document(encoded(RED, "TIFF", save_all=True, append_images=[RED, RED]), DecodeLimits(max_pages=2))
    assert info.value.code == decode.TOO_MANY_PAGES


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="pdf_dpi must be between"):
        DecodeLimits(pdf_dpi=5)
