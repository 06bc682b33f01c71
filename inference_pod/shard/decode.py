"""Bytes → pages (RGB uint8 arrays), with per-item limits. Failures are `ItemError`s: one bad file never
fails a shard.

The format comes from the content (magic bytes), not the key's suffix. Pages are produced lazily, so a
500-page PDF is never held in memory at once; the page count is known up front. PDFium is not
thread-safe, so every PDFium call holds one process-wide lock.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from inference_pod.job import settings

_PDFIUM_LOCK = threading.Lock()


class ItemError(Exception):
    """A per-item failure that becomes an error record. `code` is stable and documented."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Error codes, documented in the README's result format.
EMPTY = "empty"
TOO_LARGE = "too_large"
UNSUPPORTED_FORMAT = "unsupported_format"
CORRUPT = "corrupt"
PIXEL_LIMIT = "pixel_limit_exceeded"
DECOMPRESSION_BOMB = "decompression_bomb"
TOO_MANY_PAGES = "too_many_pages"
ENCRYPTED = "encrypted"
NOT_FOUND = "not_found"


@dataclass(frozen=True)
class DecodeLimits:
    max_item_bytes: int = settings.default("max_item_bytes")
    max_pixels: int = settings.default("max_pixels")  # per page, after PDF rendering
    max_pages: int = settings.default("max_pages")
    pdf_dpi: int = settings.default("pdf_dpi")
    # An over-limit image whose pixel data would be this many times its compressed size is reported as a
    # decompression bomb rather than merely too big.
    bomb_ratio: int = 100

    def __post_init__(self) -> None:
        settings.check_all({name: getattr(self, name) for name in ("max_item_bytes", "max_pixels", "max_pages",
                                                                   "pdf_dpi")})
        if not 2 <= self.bomb_ratio <= 1_000_000:
            raise ValueError(f"bomb_ratio must be between 2 and 1000000, got {self.bomb_ratio}")


@dataclass
class Document:
    kind: str  # png, jpeg, bmp, tiff, webp, pdf
    page_count: int
    pages: Iterator[np.ndarray]


def sniff(data: bytes) -> str | None:
    head = data[:16]
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    return None


def check_size(size: int, limits: DecodeLimits) -> None:
    if size == 0:
        raise ItemError(EMPTY, "the object is empty (0 bytes)")
    if size > limits.max_item_bytes:
        raise ItemError(
            TOO_LARGE, f"the object is {size} bytes, over the limit of {limits.max_item_bytes} (maxItemBytes)"
        )


def open_document(data: bytes, limits: DecodeLimits) -> Document:
    check_size(len(data), limits)
    kind = sniff(data)
    if kind is None:
        raise ItemError(
            UNSUPPORTED_FORMAT,
            "the content is not PNG, JPEG, BMP, TIFF, WebP or PDF (checked by content, not by name)",
        )
    if kind == "pdf":
        return _open_pdf(data, limits)
    return _open_image(kind, data, limits)


def _check_pixels(width: int, height: int, compressed: int, limits: DecodeLimits, where: str) -> None:
    pixels = width * height
    if pixels <= limits.max_pixels:
        return
    if pixels * 3 > compressed * limits.bomb_ratio:
        raise ItemError(
            DECOMPRESSION_BOMB,
            f"{where} declares {width}x{height} pixels from {compressed} bytes: refused as a decompression bomb",
        )
    raise ItemError(
        PIXEL_LIMIT,
        f"{where} has {width}x{height} = {pixels} pixels, over the limit of {limits.max_pixels} (maxPixels)",
    )


def _open_image(kind: str, data: bytes, limits: DecodeLimits) -> Document:
    try:
        with warnings.catch_warnings():
            # Our own pixel check below is the limit; Pillow's global one must not interfere.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.MAX_IMAGE_PIXELS = None
            frames = getattr(image, "n_frames", 1)
    except UnidentifiedImageError as exc:
        raise ItemError(CORRUPT, f"the {kind.upper()} signature is there but the image data is damaged") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemError(CORRUPT, f"cannot read the {kind.upper()} image: {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ItemError(DECOMPRESSION_BOMB, str(exc)) from exc
    if frames > limits.max_pages:
        raise ItemError(TOO_MANY_PAGES, f"the image has {frames} frames, over the limit of {limits.max_pages}")
    _check_pixels(*image.size, len(data), limits, "the image")

    def pages() -> Iterator[np.ndarray]:
        try:
            for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
                _check_pixels(*frame.size, len(data), limits, f"page {number}")
                yield np.asarray(frame.convert("RGB"))
        except ItemError:
            raise
        except Exception as exc:  # truncated or malformed image data surfaces only on load
            raise ItemError(CORRUPT, f"cannot decode the {kind.upper()} image: {exc}") from exc
        finally:
            image.close()

    return Document(kind, frames, pages())


def _open_pdf(data: bytes, limits: DecodeLimits) -> Document:
    import pypdfium2 as pdfium

    try:
        with _PDFIUM_LOCK:
            pdf = pdfium.PdfDocument(data)
            count = len(pdf)
    except pdfium.PdfiumError as exc:
        text = str(exc)
        if "password" in text.lower():
            raise ItemError(ENCRYPTED, "the PDF is password-protected; decrypt it before OCR") from exc
        raise ItemError(CORRUPT, f"cannot open the PDF: {text}") from exc
    if count == 0:
        with _PDFIUM_LOCK:
            pdf.close()
        raise ItemError(CORRUPT, "the PDF has no pages")
    if count > limits.max_pages:
        with _PDFIUM_LOCK:
            pdf.close()
        raise ItemError(TOO_MANY_PAGES, f"the PDF has {count} pages, over the limit of {limits.max_pages}")
    scale = limits.pdf_dpi / 72

    def pages() -> Iterator[np.ndarray]:
        try:
            for index in range(count):
                with _PDFIUM_LOCK:
                    page = pdf[index]
                    width, height = page.get_size()
                    pixels_w, pixels_h = round(width * scale), round(height * scale)
                    if pixels_w * pixels_h > limits.max_pixels:
                        page.close()
                        raise ItemError(
                            PIXEL_LIMIT,
                            f"page {index + 1} renders to {pixels_w}x{pixels_h} pixels at {limits.pdf_dpi} dpi, "
                            f"over the limit of {limits.max_pixels} (lower pdfDpi or raise maxPixels)",
                        )
                    try:
                        bitmap = page.render(scale=scale)
                        array = bitmap.to_numpy()
                        mode = bitmap.mode
                    finally:
                        page.close()
                yield _to_rgb(array, mode)
        except ItemError:
            raise
        except Exception as exc:
            raise ItemError(CORRUPT, f"cannot render the PDF: {exc}") from exc
        finally:
            with _PDFIUM_LOCK:
                pdf.close()

    return Document("pdf", count, pages())


def _to_rgb(array: np.ndarray, mode: str) -> np.ndarray:
    """PDFium renders BGR(A)/BGRX by default; the pipeline speaks RGB."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if mode in ("BGR", "BGRA", "BGRX"):
        return np.ascontiguousarray(array[:, :, 2::-1])
    return np.ascontiguousarray(array[:, :, :3])
