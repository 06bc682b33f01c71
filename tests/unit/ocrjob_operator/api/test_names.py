"""The shard pod name format and its parser: one declaration, inverse of each other, valid DNS labels."""

from __future__ import annotations

import pytest

from inference_pod.job.plan import MAX_SHARDS
from ocrjob_operator.api.names import MAX_JOB_NAME, POD_NAME_SHAPE, PodName, parse_pod_name, pod_name


def test_the_format() -> None:
    assert pod_name("scan-2024", 3, 2) == "scan-2024-s3-a2"
    assert POD_NAME_SHAPE == "<name>-s<shard>-a<attempt>"


@pytest.mark.parametrize(("job", "shard", "attempt"), [("j", 0, 0), ("scan-2024", 12, 3), ("a-s1-a2", 4, 5),
                                                       ("x" * MAX_JOB_NAME, MAX_SHARDS - 1, 999)])
def test_parse_is_the_inverse(job: str, shard: int, attempt: int) -> None:
    name = pod_name(job, shard, attempt)
    assert parse_pod_name(name) == PodName(job, shard, attempt)
    assert str(PodName(job, shard, attempt)) == name


@pytest.mark.parametrize("name", [None, "", "j", "j-s0", "j-a0", "-s0-a0", "j-s-a0", "j-sx-a1", "j-s0-a0-x"])
def test_other_names_are_not_pod_names(name: str | None) -> None:
    assert parse_pod_name(name) is None


def test_the_longest_pod_name_is_a_dns_label() -> None:
    # MAX_SHARDS shards (the CRD's shardCount maximum) and 1000 attempts at most, a job name of MAX_JOB_NAME.
    assert len(pod_name("x" * MAX_JOB_NAME, MAX_SHARDS - 1, 999)) <= 63
