from __future__ import annotations

import pytest

from inference_pod.job.sizes import parse_size
from inference_pod.local.runner import DevicesError, local_job_id, parse_devices


@pytest.mark.parametrize(
    ("spec", "slots"),
    [("cpu", ["cpu"]), ("cpu:3", ["cpu"] * 3), ("gpu", ["gpu"]), ("gpu:0,2", ["gpu:0", "gpu:2"]), ("GPU:1", ["gpu:1"])],
)
def test_devices(spec: str, slots: list[str]) -> None:
    assert parse_devices(spec) == slots


@pytest.mark.parametrize("spec", ["cpu:0", "gpu:0,0", "gpu:a", "tpu", "cpu:x", "gpu:"])
def test_bad_devices_say_what_is_accepted(spec: str) -> None:
    with pytest.raises(DevicesError, match="use cpu, cpu:N"):
        parse_devices(spec)


@pytest.mark.parametrize(
    ("text", "size"),
    # One parser for `ocrjob run` and the OcrJob's targetShardSize: Kubernetes quantity suffixes (M is 10**6,
    # Mi is 2**20) plus the byte-unit spellings (MiB, GB).
    [("1048576", 1 << 20), ("512MiB", 512 << 20), ("2GiB", 2 << 30), ("1GB", 10**9), ("1.5Mi", 3 << 19),
     ("1.5M", 1_500_000), ("2Gi", 2 << 30), ("500k", 500_000)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="512MiB"):
        parse_size("lots")


def test_local_job_id_is_stable_and_path_safe() -> None:
    assert local_job_id("a", "b") == local_job_id("a", "b") != local_job_id("a", "c")
    assert local_job_id("a", "b").startswith("local-")
