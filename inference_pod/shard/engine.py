"""The one PaddleOCR predictor of a worker process, owned by exactly one thread.

A Paddle predictor is not thread-safe: calling one PaddleOCR instance from several threads (the FastAPI /
Flask pattern) gives ``could not execute a primitive`` or silently corrupted results. So the engine
records the thread that built it and refuses calls from any other; download, decode and upload run in
other threads and feed this one through bounded queues.

Import this module only after the device is pinned (``inference_pod.shard.device.pin_device``): constructing an
engine imports paddle. Nothing here reaches a model hub: PaddleOCR always gets a local model dir with
its model name, and PaddleX's model-source check is switched off before paddleocr is imported.
"""

from __future__ import annotations

import math
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference_pod.job import settings
from inference_pod.models import ENGINE_FILES, ModelError, ModelSpec, validate_model_dir
from inference_pod.shard.det_input import DetInput, DetResize, prepare, to_original

_DEVICE_RE = re.compile(r"^(cpu|gpu(:\d+)?)$")


def _default_cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class OcrOptions:
    """Detection and recognition settings; the defaults suit scanned or rendered documents."""

    det_limit_side_len: int = settings.default("det_limit_side_len")  # limit_type "max": the longer side
    det_limit_type: str = "max"  # "max", "min" or "resize_long" (PaddleOCR's meanings)
    det_input: str = settings.default("det_input")  # adaptive: border + resize per image shape (det_input.py)
    det_thresh: float = 0.3  # pixel probability threshold of the DB text map
    det_box_thresh: float = 0.6  # mean probability a box needs to be kept
    # How far DB boxes are grown around the text kernel. PaddleOCR's 1.5 crops document lines so tightly that
    # the recogniser drops most spaces between English words (WER 0.3-0.9 at CER 0.005 on A4 pages); with
    # 2.2 the crop keeps some paper around the line and the spaces come back (WER < 0.02, bench/README).
    det_unclip_ratio: float = 2.2
    rec_batch_size: int = settings.default("rec_batch_size")  # text lines per recogniser call
    rec_score_thresh: float = 0.0  # lines recognised with a lower score are dropped
    engine: str = settings.default("engine")  # onnxruntime or paddle (PaddleOCR's inference engines)
    # PaddleOCR's default is 10 threads whatever the machine; more threads than cores only slows it down.
    cpu_threads: int = field(default_factory=_default_cpu_threads)

    def __post_init__(self) -> None:
        problems = []
        for name in ("det_limit_side_len", "rec_batch_size", "engine", "det_input"):
            try:
                settings.BY_NAME[name].check(getattr(self, name))
            except settings.SettingError as exc:
                problems.append(str(exc))
        if self.det_limit_type not in ("max", "min", "resize_long"):
            problems.append(f"det_limit_type must be 'max', 'min' or 'resize_long', got {self.det_limit_type!r}")
        for name in ("det_thresh", "det_box_thresh"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                problems.append(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")
        if not isinstance(self.det_unclip_ratio, (int, float)) or not 0.0 < self.det_unclip_ratio <= 10.0:
            problems.append(f"det_unclip_ratio must be a number above 0 and at most 10, got {self.det_unclip_ratio!r}")
        if not isinstance(self.rec_score_thresh, (int, float)) or not 0.0 <= self.rec_score_thresh <= 1.0:
            problems.append(f"rec_score_thresh must be a number from 0 to 1, got {self.rec_score_thresh!r}")
        if not isinstance(self.cpu_threads, int) or not 1 <= self.cpu_threads <= 256:
            problems.append(f"cpu_threads must be an integer from 1 to 256, got {self.cpu_threads!r}")
        if problems:
            raise ValueError("invalid OCR options: " + "; ".join(problems))


class ThreadOwnershipError(RuntimeError):
    """The engine was called from a thread other than the one that built it."""


class ModelLoadError(ModelError):
    """The models could not be loaded or run at all (systemic: fails the shard). Says what to fix."""


class OcrEngine:
    """PaddleOCR (detection + recognition, no orientation/unwarping models) pinned to one device and thread,
    on the inference engine `options.engine` (ONNX Runtime or Paddle Inference)."""

    def __init__(self, models: ModelSpec, options: OcrOptions, device: str, warmup: bool = True) -> None:
        if not _DEVICE_RE.match(device or ""):
            raise ValueError(f"device must be 'cpu' or 'gpu:N' (e.g. 'gpu:0'), got {device!r}")
        self.models = models
        self.options = options
        self.device = device
        self.model_names: dict[str, str] = models.model_names()
        self._owner = threading.get_ident()
        self._owner_name = threading.current_thread().name

        try:
            validate_model_dir(models.det_dir, models.det_name, engine=options.engine)
            validate_model_dir(models.rec_dir, models.rec_name, engine=options.engine)
        except ModelError as exc:
            raise ModelLoadError(str(exc)) from exc

        self._ocr = self._build()
        if warmup:
            self._warmup()

    def _build(self) -> Any:
        # Must be set before paddleocr/paddlex are imported: the check would try to reach a model hub.
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        with warnings.catch_warnings():
            # paddle, imported lazily in here, warns about a missing ccache (only used to build custom ops).
            warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
            return self._construct()

    def _construct(self) -> Any:
        try:
            from paddleocr import PaddleOCR
        except Exception as exc:
            raise ModelLoadError(
                f"cannot import paddleocr ({type(exc).__name__}: {exc}); install the project with its "
                "'cpu' or 'gpu' extra so paddlepaddle and paddleocr are present"
            ) from exc
        opts = self.options
        kwargs: dict[str, Any] = {
            "text_detection_model_name": self.models.det_name,
            "text_detection_model_dir": str(self.models.det_dir),
            "text_recognition_model_name": self.models.rec_name,
            "text_recognition_model_dir": str(self.models.rec_dir),
            "text_recognition_batch_size": opts.rec_batch_size,
            "use_doc_orientation_classify": False,
            "use_doc_unwarping": False,
            "use_textline_orientation": False,
            "text_det_limit_side_len": opts.det_limit_side_len,
            "text_det_limit_type": opts.det_limit_type,
            "text_det_thresh": opts.det_thresh,
            "text_det_box_thresh": opts.det_box_thresh,
            "text_det_unclip_ratio": opts.det_unclip_ratio,
            "text_rec_score_thresh": opts.rec_score_thresh,
            "device": self.device,
        }
        if opts.engine == settings.ENGINE_ONNXRUNTIME:
            kwargs["engine"] = "onnxruntime"
            if self.device == "cpu":
                # ONNX Runtime's default is one intra-op thread per core of the machine, not of this worker.
                kwargs["engine_config"] = {"intra_op_num_threads": opts.cpu_threads, "inter_op_num_threads": 1}
        elif self.device == "cpu":
            # Paddle 3.3's oneDNN path fails on these old-format (.pdmodel) models at run time
            # ("ConvertPirAttribute2RuntimeAttribute not support"), so the plain CPU kernels are used.
            kwargs["enable_mkldnn"] = False
            kwargs["cpu_threads"] = opts.cpu_threads
        try:
            return PaddleOCR(**kwargs)
        except Exception as exc:
            raise ModelLoadError(self._explain(exc, "loading")) from exc

    @property
    def paddleocr(self) -> Any:
        """The PaddleOCR object as built here (the benchmark's bare loop calls it directly, same thread)."""
        return self._ocr

    def _warmup(self) -> None:
        """Run one tiny page so a model that loads but cannot run fails here, as a load error."""
        from PIL import Image, ImageDraw, ImageFont

        page = Image.new("RGB", (320, 64), "white")
        ImageDraw.Draw(page).text((16, 12), "Warm up 42", fill="black", font=ImageFont.load_default(size=32))
        try:
            result = self._ocr.predict(np.asarray(page)[:, :, ::-1].copy())
            if not result or not result[0].get("rec_texts"):
                # Both models ran without error yet found nothing in plain printed text: wrong weights or
                # a wrong inference.yml (normalisation, dictionary) would look like this.
                raise RuntimeError("the models returned no text for a clearly printed test line")
        except Exception as exc:
            raise ModelLoadError(self._explain(exc, "running")) from exc

    def _explain(self, exc: Exception, doing: str) -> str:
        return (
            f"{doing} the OCR models failed on {self.device} with the {self.options.engine} engine "
            f"({type(exc).__name__}: {exc}). "
            f"Detection: {self.models.det_name} in {self.models.det_dir}; recognition: {self.models.rec_name} "
            f"in {self.models.rec_dir}. Check that each directory holds {ENGINE_FILES[self.options.engine]} "
            "exported for that model name by PaddleOCR 3.x/PaddleX, and that the engine's build matches the "
            "device (paddlepaddle-gpu or onnxruntime-gpu for gpu)."
        )

    def predict(self, images: list[np.ndarray]) -> list[dict]:
        """OCR RGB uint8 pages of shape (H, W, 3); one JSON-serialisable dict per page, in order.

        Each dict: {"width", "height", "lines": [{"text", "score", "polygon": [[x, y], ...]}]}.
        """
        if threading.get_ident() != self._owner:
            raise ThreadOwnershipError(
                f"OcrEngine belongs to thread {self._owner_name!r} and was called from "
                f"{threading.current_thread().name!r}: a Paddle predictor must only be used by the thread "
                "that created it; hand work to that thread through a queue"
            )
        if not images:
            return []
        opts = self.options
        page_rule = DetResize(opts.det_limit_side_len, opts.det_limit_type)
        adaptive = opts.det_input == settings.DET_INPUT_ADAPTIVE
        # PaddleOCR treats ndarray input as BGR (cv2 convention).
        inputs = [prepare(_to_bgr(image, index), adaptive, page_rule) for index, image in enumerate(images)]
        raw = self._predict_grouped(inputs)
        return [_page_result(result, image.shape, prepared.border)
                for result, image, prepared in zip(raw, images, inputs, strict=True)]

    def _predict_grouped(self, inputs: list[DetInput]) -> list[Any]:
        """PaddleOCR's results in input order. It takes the detection resize per call, not per image, so images
        with the same decision (all ordinary pages) share one call, in which a list runs page after page."""
        groups: dict[DetResize, list[int]] = {}
        for index, prepared in enumerate(inputs):
            groups.setdefault(prepared.resize, []).append(index)
        results: list[Any] = [None] * len(inputs)
        for resize, indices in groups.items():
            raw = self._ocr.predict([inputs[i].image for i in indices], text_det_limit_side_len=resize.limit_side_len,
                                    text_det_limit_type=resize.limit_type)
            if len(raw) != len(indices):
                raise RuntimeError(f"PaddleOCR returned {len(raw)} results for {len(indices)} images")
            for index, result in zip(indices, raw, strict=True):
                results[index] = result
        return results


def _to_bgr(image: Any, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = (
            f"an array of dtype {image.dtype} and shape {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise ValueError(f"image {index} is {what}; OcrEngine.predict takes RGB uint8 arrays of shape (H, W, 3)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index} is empty (shape {image.shape})")
    return np.ascontiguousarray(image[:, :, ::-1])


def _page_result(result: Any, shape: tuple[int, ...], border: int) -> dict:
    """The page's lines with polygons in the original image's pixels (the detection border taken off)."""
    texts = result.get("rec_texts") or []
    scores = result.get("rec_scores")
    polys = result.get("rec_polys")
    scores = [] if scores is None else list(scores)
    polys = [] if polys is None else list(polys)
    lines = []
    for text, score, poly in zip(texts, scores, polys, strict=True):
        score = float(score)
        lines.append(
            {
                "text": str(text),
                "score": score if math.isfinite(score) else 0.0,
                "polygon": to_original(np.asarray(poly).reshape(-1, 2), border, int(shape[0]), int(shape[1])),
            }
        )
    return {"width": int(shape[1]), "height": int(shape[0]), "lines": lines}
