from __future__ import annotations

import sys
import types

import pytest

from inference_pod.job import exit_codes, settings
from inference_pod.shard.device import (
    CUDA_PROVIDER,
    DeviceError,
    NoCudaBuild,
    check_cuda_builds,
    onnxruntime_providers,
    parse_device,
    plan_device,
    verify_device,
)


def test_cpu_hides_every_gpu() -> None:
    plan = plan_device("cpu", {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert plan.paddle_device == "cpu" and plan.env == {"CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize(
    ("env", "visible"),
    [
        ({}, None),  # nothing set: counted at start-up, must be exactly one
        ({"CUDA_VISIBLE_DEVICES": "3"}, "3"),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-8f2c1a7e-0000-1111-2222-333344445555"},
         "GPU-8f2c1a7e-0000-1111-2222-333344445555"),
        ({"CUDA_VISIBLE_DEVICES": "GPU-abc"}, "GPU-abc"),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, None),
    ],
)
def test_one_visible_gpu_is_used_as_gpu0(env: dict, visible: str | None) -> None:
    plan = plan_device("gpu", env)
    assert plan.paddle_device == "gpu:0"
    assert plan.visible == visible
    assert plan.env == {}  # nothing to change: the pod's single GPU is already the only one visible


def test_local_index_pins_cuda_visible_devices() -> None:
    plan = plan_device("gpu:3", {"CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert plan.env == {"CUDA_VISIBLE_DEVICES": "3"} and plan.paddle_device == "gpu:0"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CUDA_VISIBLE_DEVICES": ""}, "hides every GPU"),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, "hides every GPU"),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, "hides every GPU"),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, "hides every GPU"),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, "exactly one visible GPU.*shows 2"),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b"}, "exactly one visible GPU"),
    ],
)
def test_zero_or_several_gpus_is_an_error_not_a_fallback(env: dict, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        plan_device("gpu", env)


def test_cuda_visible_devices_wins_over_nvidia_visible_devices() -> None:
    assert plan_device("gpu", {"CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "0,1"}).visible == "1"


@pytest.mark.parametrize("bad", ["tpu", "gpu:x", "cuda:0", ""])
def test_unknown_devices_are_explained(bad: str) -> None:
    with pytest.raises(DeviceError, match="unknown device"):
        parse_device(bad)


def test_each_device_error_type_carries_its_exit_code() -> None:
    with pytest.raises(DeviceError) as wrong_count:
        plan_device("gpu", {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert wrong_count.value.exit_code == exit_codes.DEVICE_UNAVAILABLE  # another node may do: retried
    assert NoCudaBuild("x").exit_code == exit_codes.DEVICE_UNSUPPORTED  # no node can: the job fails fast
    assert issubclass(NoCudaBuild, DeviceError)


@pytest.mark.parametrize(("paddle_cuda", "engine", "providers", "missing"), [
    (False, settings.ENGINE_PADDLE, [CUDA_PROVIDER], "paddlepaddle-gpu"),
    (False, settings.ENGINE_ONNXRUNTIME, [CUDA_PROVIDER], "paddlepaddle-gpu"),
    (True, settings.ENGINE_ONNXRUNTIME, ["CPUExecutionProvider"], "onnxruntime-gpu"),
    (True, settings.ENGINE_ONNXRUNTIME, [CUDA_PROVIDER, "CPUExecutionProvider"], None),
    (True, settings.ENGINE_PADDLE, ["CPUExecutionProvider"], None),  # ONNX Runtime unused: its build does not matter
])
def test_a_build_without_cuda_is_its_own_error_naming_the_fix(
    paddle_cuda: bool, engine: str, providers: list[str], missing: str | None,
) -> None:
    if missing is None:
        check_cuda_builds(paddle_cuda, engine, providers=lambda: providers)
        return
    with pytest.raises(NoCudaBuild) as error:
        check_cuda_builds(paddle_cuda, engine, providers=lambda: providers)
    assert missing in str(error.value) and "ocrjob[gpu]" in str(error.value) and "device: cpu" in str(error.value)


def test_verify_device_refuses_gpu_on_a_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for the CPU build of paddle: importing the real one here would make pin_device refuse in
    # later tests of this process.
    fake = types.SimpleNamespace(device=types.SimpleNamespace(is_compiled_with_cuda=lambda: False))
    monkeypatch.setitem(sys.modules, "paddle", fake)
    with pytest.raises(NoCudaBuild, match="paddlepaddle-gpu"):
        verify_device(plan_device("gpu:0", {}), settings.ENGINE_ONNXRUNTIME)
    assert verify_device(plan_device("cpu", {}), settings.ENGINE_ONNXRUNTIME).paddle_compiled_with_cuda is False


def test_the_installed_cpu_onnxruntime_has_no_cuda_provider() -> None:
    pytest.importorskip("onnxruntime")
    if CUDA_PROVIDER in onnxruntime_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(NoCudaBuild, match="onnxruntime-gpu"):
        check_cuda_builds(True, settings.ENGINE_ONNXRUNTIME)
