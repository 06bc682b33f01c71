"""The operator's Kubernetes surface: the expected answers (gone, already there) become values, every other
typed error leaves as it is."""

from __future__ import annotations

from typing import Any

import pytest

from ocrjob_operator.api.client import Conflict, Forbidden, KubeError, NotFound, Unavailable
from ocrjob_operator.api.names import ANNOTATION_KILL_REASON
from ocrjob_operator.kube import Kube


class FakeClient:
    """Raises `errors[method]` when set, records every call otherwise."""

    def __init__(self, **errors: KubeError) -> None:
        self.errors, self.calls = errors, []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, args, kwargs))
            if method in self.errors:
                raise self.errors[method]
            return {"data": "x"} if method in ("get_job", "read_secret") else []
        return call


def test_expected_answers_become_values() -> None:
    gone, taken = NotFound(404, "gone"), Conflict(409, "taken")
    kube = Kube(FakeClient(get_job=gone, read_secret=gone, create_pod=taken, delete_pod=gone, delete_job=taken,
                           patch_pod=gone))  # type: ignore[arg-type]
    assert kube.get_job("ns", "j") is None and kube.read_secret("ns", "s") is None
    assert kube.create_pod({"metadata": {"namespace": "ns", "name": "p"}}) is False
    assert kube.delete_pod("ns", "p") is False
    kube.delete_job("ns", "j", "uid-1")  # replaced or gone: nothing to do
    kube.kill_pod("ns", "p", "Stalled", "why", 0)


def test_calls_carry_the_operators_choices() -> None:
    client = FakeClient()
    kube = Kube(client)  # type: ignore[arg-type]
    assert kube.create_pod({"metadata": {"namespace": "ns", "name": "p"}}) is True
    assert kube.delete_pod("ns", "p", 5) is True
    kube.delete_job("ns", "j", "uid-1")
    kube.kill_pod("ns", "p", "Stalled", "why", 0)
    kube.list_job_pods("ns", "uid-1")
    calls = {name: (args, kwargs) for name, args, kwargs in client.calls}
    assert calls["delete_job"] == (("ns", "j"), {"uid": "uid-1", "propagation_policy": "Background"})
    patch = calls["patch_pod"][0][2]
    assert patch["metadata"]["annotations"][ANNOTATION_KILL_REASON] == "Stalled"
    assert patch["spec"]["activeDeadlineSeconds"] == 1  # never 0: the apiserver requires a positive deadline
    assert calls["list_pods"][0][1].endswith("=uid-1")


@pytest.mark.parametrize("error", [Forbidden(403, "no"), Unavailable(0, "down"), NotFound(404, "ns gone")])
def test_other_errors_leave_typed(error: KubeError) -> None:
    kube = Kube(FakeClient(create_pod=error, delete_job=Forbidden(403, "no")))  # type: ignore[arg-type]
    with pytest.raises(type(error)):
        kube.create_pod({"metadata": {"namespace": "ns", "name": "p"}})
    with pytest.raises(Forbidden):
        kube.delete_job("ns", "j", "uid")
