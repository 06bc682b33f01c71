"""Device pinning: decide, before anything CUDA-related is imported, which single device this process uses.

The failures this prevents: CUDA initialised in a parent and inherited through fork; every "multi-GPU"
worker silently running on GPU 0; a GPU request quietly falling back to CPU. Rules:

* ``cpu``: GPUs are hidden (``CUDA_VISIBLE_DEVICES=""``) so a GPU build of Paddle cannot touch GPU 0.
* ``gpu``: exactly one GPU must be visible and it is used as ``gpu:0``. In a pod the device plugin makes
  one GPU visible (``NVIDIA_VISIBLE_DEVICES=GPU-<uuid>``); locally the runner sets
  ``CUDA_VISIBLE_DEVICES=<index>`` for each process it spawns. Zero or several visible GPUs is an error
  that says how to fix it (``DeviceError``: DEVICE_UNAVAILABLE, retried: another node may do); nothing falls
  back to CPU. A Paddle or ONNX Runtime build without CUDA cannot serve ``gpu`` on any node (``NoCudaBuild``:
  DEVICE_UNSUPPORTED, the job fails fast).
* ``gpu:N`` (local runs only): shorthand for ``gpu`` with ``CUDA_VISIBLE_DEVICES=N`` set first.

``pin_device`` must run before paddle is imported in this process; it refuses to run after.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import asdict, dataclass
from typing import ClassVar

from inference_pod.job import exit_codes, settings

_NONE_VALUES = {"", "none", "void", "-1"}
CUDA_PROVIDER = "CUDAExecutionProvider"  # ONNX Runtime's provider name for NVIDIA GPUs


class DeviceError(RuntimeError):
    """The requested device is not the one this process can see; the message says how to fix it. The shard
    ends with `exit_code` (chosen by the error's type, never by its message)."""

    exit_code: ClassVar[int] = exit_codes.DEVICE_UNAVAILABLE  # this node's GPUs: a retry elsewhere may work


class NoCudaBuild(DeviceError):
    """A GPU was requested but the installed Paddle or ONNX Runtime has no CUDA build: the image is wrong."""

    exit_code: ClassVar[int] = exit_codes.DEVICE_UNSUPPORTED  # the same image fails on every node: not retried


def _no_cuda(build: str, gpu_package: str) -> NoCudaBuild:
    return NoCudaBuild(
        f"device 'gpu' was requested but this image's {build} has no CUDA support, so no retry or other node can "
        f"help: use the GPU image (built with the `ocrjob[gpu]` extra, which installs {gpu_package}), or set the "
        "device to cpu (spec.device: cpu; `ocrjob run --devices cpu`)"
    )


@dataclass(frozen=True)
class DevicePlan:
    kind: str  # "cpu" or "gpu"
    paddle_device: str  # what PaddleOCR is given: "cpu" or "gpu:0"
    visible: str | None  # the visible-device value as set for this process (index or UUID), None if unknown
    env: dict[str, str]  # variables to set in this process before paddle is imported


@dataclass(frozen=True)
class DeviceReport:
    """Which device was really used: goes into every result and the shard summary."""

    kind: str
    paddle_device: str
    visible: str | None = None
    name: str | None = None
    uuid: str | None = None
    paddle_compiled_with_cuda: bool | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_device(requested: str) -> tuple[str, str | None]:
    """'cpu' | 'gpu' | 'gpu:N' → (kind, explicit index or None)."""
    value = (requested or "").strip().lower()
    if value == "cpu":
        return "cpu", None
    if value == "gpu":
        return "gpu", None
    if value.startswith("gpu:") and value[4:].isdigit():
        return "gpu", value[4:]
    raise DeviceError(f"unknown device {requested!r}: use 'cpu', 'gpu' (the one GPU given to this pod) or 'gpu:N'")


def _entries(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def plan_device(requested: str, env: Mapping[str, str]) -> DevicePlan:
    """Pure: from the requested device and the environment, the pinning to apply, or a DeviceError."""
    kind, index = parse_device(requested)
    if kind == "cpu":
        return DevicePlan("cpu", "cpu", None, {"CUDA_VISIBLE_DEVICES": ""})
    if index is not None:
        return DevicePlan("gpu", "gpu:0", index, {"CUDA_VISIBLE_DEVICES": index})
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if name not in env:
            continue
        value = env[name].strip()
        if value.lower() == "all" and name == "NVIDIA_VISIBLE_DEVICES":
            continue  # the runtime exposes every GPU: counted after start-up by verify_device
        if value.lower() in _NONE_VALUES:
            raise DeviceError(
                f"device 'gpu' was requested but {name}={value!r} hides every GPU: give the pod "
                "`resources.limits: {nvidia.com/gpu: 1}` (or run with device 'cpu')"
            )
        entries = _entries(value)
        if len(entries) != 1:
            raise DeviceError(
                f"device 'gpu' needs exactly one visible GPU, but {name}={value!r} shows {len(entries)}: "
                "a shard pod must request `nvidia.com/gpu: 1`; locally use `--devices gpu:0,1`, which starts "
                "one process per GPU"
            )
        return DevicePlan("gpu", "gpu:0", entries[0], {})
    return DevicePlan("gpu", "gpu:0", None, {})


def pin_device(requested: str, env: MutableMapping[str, str] | None = None) -> DevicePlan:
    """Apply the pinning to this process's environment. Must run before paddle is imported."""
    if "paddle" in sys.modules:
        raise DeviceError(
            "paddle was imported before the device was pinned; the loader must pin first "
            "(this is the CUDA-initialised-before-fork failure this project exists to prevent)"
        )
    env = os.environ if env is None else env
    plan = plan_device(requested, env)
    env.update(plan.env)
    return plan


def onnxruntime_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def check_cuda_builds(paddle_compiled_with_cuda: bool, engine: str,
                      providers: Callable[[], list[str]] = onnxruntime_providers) -> None:
    """Raise NoCudaBuild when a library the GPU path needs was built without CUDA: Paddle (it counts and names
    the GPU), and ONNX Runtime when it is the engine (onnxruntime, unlike onnxruntime-gpu, has no CUDA provider)."""
    if not paddle_compiled_with_cuda:
        raise _no_cuda("Paddle (paddlepaddle)", "paddlepaddle-gpu")
    if engine == settings.ENGINE_ONNXRUNTIME and CUDA_PROVIDER not in providers():
        raise _no_cuda("ONNX Runtime (onnxruntime)", "onnxruntime-gpu")


def verify_device(plan: DevicePlan, engine: str) -> DeviceReport:
    """After paddle is importable: check that exactly the expected device is there, and describe it."""
    import paddle

    compiled = bool(paddle.device.is_compiled_with_cuda())
    if plan.kind == "cpu":
        return DeviceReport("cpu", "cpu", paddle_compiled_with_cuda=compiled)
    check_cuda_builds(compiled, engine)
    count = paddle.device.cuda.device_count()
    if count != 1:
        raise DeviceError(
            f"device 'gpu' needs exactly one visible GPU, found {count}: "
            + ("check the GPU request and the NVIDIA device plugin on this node" if count == 0 else
               "a shard pod must request `nvidia.com/gpu: 1`; set CUDA_VISIBLE_DEVICES to one GPU")
        )
    name = paddle.device.cuda.get_device_name(0)
    uuid = plan.visible if plan.visible and plan.visible.startswith(("GPU-", "MIG-")) else _query_uuid(plan.visible)
    return DeviceReport("gpu", "gpu:0", plan.visible, name, uuid, compiled)


def _query_uuid(index: str | None) -> str | None:
    """The UUID of the GPU in use, via nvidia-smi when present (it ignores CUDA_VISIBLE_DEVICES: ask by index)."""
    selector = ["-i", index] if index and index.isdigit() else []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader", *selector],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if len(out) == 1 else None
