"""OcrEngine with real PaddleOCR on the bundled PP-OCRv4 mobile models (CPU), plus its input/option checks."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inference_pod.local.samples import render_page
from inference_pod.models import DET_NAME, ModelSpec
from inference_pod.shard.engine import ModelLoadError, OcrEngine, OcrOptions, ThreadOwnershipError, _to_bgr

PAGE_A = ["INVOICE Number 4821", "Customer Garden Office", "apple butter lemon"]
PAGE_B = ["Delivery Address Harbor", "friday morning", "WAREHOUSE Rocket"]


class NetworkAttempts:
    """Replaces socket connect/resolve with a recorder that refuses: any hub access would show up here."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __enter__(self) -> NetworkAttempts:
        self._saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection)

        def refuse(what: str):
            def inner(*args, **kwargs):
                self.calls.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
                raise OSError("network access is not allowed in this test")

            return inner

        socket.socket.connect = refuse("socket.connect")  # type: ignore[method-assign]
        socket.socket.connect_ex = refuse("socket.connect_ex")  # type: ignore[method-assign]
        socket.getaddrinfo = refuse("getaddrinfo")  # type: ignore[assignment]
        socket.create_connection = refuse("create_connection")  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection = self._saved


@pytest.fixture(scope="module")
def guarded_engine(ocr_models: ModelSpec) -> Iterator[tuple[OcrEngine, NetworkAttempts]]:
    # Built once per module (model load takes seconds), in the thread that runs the tests.
    with NetworkAttempts() as attempts:
        engine = OcrEngine(ocr_models, OcrOptions(), "cpu")
    yield engine, attempts


@pytest.fixture(scope="module")
def engine(guarded_engine: tuple[OcrEngine, NetworkAttempts]) -> OcrEngine:
    return guarded_engine[0]


def _tokens(page: dict) -> set[str]:
    return set(" ".join(line["text"] for line in page["lines"]).split())


def _words(lines: list[str]) -> list[str]:
    return " ".join(lines).split()


@pytest.mark.ocr
def test_recognises_the_known_words_of_each_page(engine: OcrEngine) -> None:
    images = [np.asarray(render_page(PAGE_A)), np.asarray(render_page(PAGE_B, size=(900, 600)))]
    pages = engine.predict(images)

    assert len(pages) == 2
    for page, image, lines in zip(pages, images, (PAGE_A, PAGE_B), strict=True):
        assert (page["width"], page["height"]) == (image.shape[1], image.shape[0])
        missing = [w for w in _words(lines) if w not in _tokens(page)]
        assert not missing, f"not recognised: {missing}; got {[line['text'] for line in page['lines']]}"
        for line in page["lines"]:
            assert 0.5 < line["score"] <= 1.0
            assert len(line["polygon"]) == 4
            assert all(0 <= x < page["width"] and 0 <= y < page["height"] for x, y in line["polygon"])
    json.dumps(pages)  # plain python types only
    assert engine.model_names == {"det": "PP-OCRv4_mobile_det", "rec": "PP-OCRv4_mobile_rec"}


@pytest.mark.ocr
def test_a_batch_gives_the_same_result_as_one_page_at_a_time(engine: OcrEngine) -> None:
    image = np.asarray(render_page(PAGE_B))
    blank = np.full((300, 400, 3), 255, dtype=np.uint8)
    batch = engine.predict([blank, image])
    assert batch[0] == {"width": 400, "height": 300, "lines": []}
    assert batch[1] == engine.predict([image])[0]
    assert engine.predict([]) == []


@pytest.mark.ocr
def test_colour_pages_are_read(engine: OcrEngine) -> None:
    # Dark red text on light blue paper. (The RGB -> BGR swap itself is checked in test_to_bgr_...)
    page = np.asarray(render_page(PAGE_A)).copy()
    ink = page[:, :, 0] < 128
    page[ink] = (140, 0, 0)
    page[~ink] = (200, 225, 255)
    assert set(_words(PAGE_A)) <= _tokens(engine.predict([page])[0])


@pytest.mark.ocr
def test_predict_from_another_thread_is_refused(engine: OcrEngine) -> None:
    caught: list[BaseException] = []

    def intruder() -> None:
        try:
            engine.predict([np.zeros((32, 32, 3), dtype=np.uint8)])
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=intruder, name="web-handler")
    thread.start()
    thread.join(timeout=60)
    assert len(caught) == 1 and isinstance(caught[0], ThreadOwnershipError)
    assert "web-handler" in str(caught[0]) and "MainThread" in str(caught[0])
    assert engine.predict([]) == []  # the owner can still use it


@pytest.mark.ocr
def test_nothing_reaches_the_network(guarded_engine: tuple[OcrEngine, NetworkAttempts]) -> None:
    engine, attempts = guarded_engine
    with attempts:
        engine.predict([np.asarray(render_page(["Network Summary"]))])
    assert attempts.calls == []


@pytest.mark.ocr
def test_rejects_images_that_are_not_rgb_uint8(engine: OcrEngine) -> None:
    with pytest.raises(ValueError, match=r"image 1 is an array of dtype float32 and shape \(8, 8, 3\)"):
        engine.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match=r"RGB uint8 arrays of shape \(H, W, 3\)"):
        engine.predict([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="image 0 is list"):
        engine.predict([[[0, 0, 0]]])  # type: ignore[list-item]


@pytest.mark.ocr
@pytest.mark.parametrize(("engine", "weights"), [("paddle", "inference.pdiparams"), ("onnxruntime", "inference.onnx")])
def test_corrupt_weights_raise_model_load_error(ocr_models: ModelSpec, tmp_path: Path, engine: str,
                                                weights: str) -> None:
    det_dir = shutil.copytree(ocr_models.det_dir, tmp_path / DET_NAME)
    (det_dir / weights).write_bytes(b"this is not a model file" * 10)
    spec = ModelSpec(ocr_models.det_name, det_dir, ocr_models.rec_name, ocr_models.rec_dir)
    with pytest.raises(ModelLoadError) as info:
        OcrEngine(spec, OcrOptions(engine=engine), "cpu")
    message = str(info.value)
    assert str(det_dir) in message and weights in message and "exported for that model" in message
    assert f"the {engine} engine" in message


def test_incomplete_model_dir_raises_model_load_error_before_paddle(ocr_models: ModelSpec, tmp_path: Path) -> None:
    det_dir = shutil.copytree(ocr_models.det_dir, tmp_path / DET_NAME)
    (det_dir / "inference.yml").unlink()
    spec = ModelSpec(ocr_models.det_name, det_dir, ocr_models.rec_name, ocr_models.rec_dir)
    with pytest.raises(ModelLoadError, match=r"lacks inference\.yml.*for the onnxruntime engine holds inference\.yml"):
        OcrEngine(spec, OcrOptions(), "cpu")


def test_device_string_is_checked(ocr_models: ModelSpec) -> None:
    for bad in ("cuda:0", "gpu0", "GPU:1", ""):
        with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu:N'"):
            OcrEngine(ocr_models, OcrOptions(), bad)


def test_to_bgr_reverses_channels_and_copies() -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 10
    rgb[..., 2] = 30
    bgr = _to_bgr(rgb, 0)
    assert bgr[0, 0].tolist() == [30, 0, 10] and bgr.flags["C_CONTIGUOUS"]
    with pytest.raises(ValueError, match="empty"):
        _to_bgr(np.zeros((0, 5, 3), np.uint8), 4)


def test_options_defaults_and_validation() -> None:
    options = OcrOptions()
    assert (options.det_limit_side_len, options.det_limit_type, options.det_box_thresh) == (960, "max", 0.6)
    assert options.cpu_threads >= 1
    with pytest.raises(ValueError) as info:
        OcrOptions(det_limit_type="huge", det_thresh=1.5, rec_batch_size=0, rec_score_thresh=-0.1)
    message = str(info.value)
    for fragment in ("det_limit_type must be", "det_thresh must be", "rec_batch_size must be", "rec_score_thresh"):
        assert fragment in message
    with pytest.raises(ValueError, match="det_limit_side_len"):
        OcrOptions(det_limit_side_len=10)
    with pytest.raises(ValueError, match="det_unclip_ratio"):
        OcrOptions(det_unclip_ratio=0)
