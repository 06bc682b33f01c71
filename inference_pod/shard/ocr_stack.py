"""Whether the OCR stack (the `[cpu]`, `[gpu]` or `[ocr]` extra) is installed, without importing it: Paddle
must not be imported before the device is pinned, and the cluster commands run without it."""

from __future__ import annotations

import importlib.util

# import name -> what to install
PACKAGES = {
    "paddle": "paddlepaddle (or paddlepaddle-gpu)",
    "paddleocr": "paddleocr",
    "PIL": "pillow",
    "pypdfium2": "pypdfium2",
    "numpy": "numpy",
    "onnxruntime": "onnxruntime (or onnxruntime-gpu)",
}


def missing_packages() -> list[str]:
    missing = []
    for module, distribution in PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: a module blanked out in sys.modules
            found = False
        if not found:
            missing.append(distribution)
    return missing


def missing_message(missing: list[str]) -> str:
    return (f"the OCR stack is not installed (missing: {', '.join(missing)}); install `ocrjob[cpu]` on a CPU "
            "machine or `ocrjob[gpu]` in a GPU image (`ocrjob[ocr]` when Paddle comes from Paddle's own index); "
            "the cluster commands alone need only `ocrjob[cli]`")
