from __future__ import annotations

import pytest

from inference_pod.shard.device import DeviceError, parse_device, plan_device


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
