"""Leader election: the pure decision over an observed Lease, and the elector against a small fake apiserver."""

from __future__ import annotations

import copy
import datetime
import threading
from typing import Any

import pytest

from ocrjob_operator import leader
from ocrjob_operator.api.client import Conflict, NotFound, Unavailable
from ocrjob_operator.leader import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    Action,
    Elector,
    LeaseRecord,
    Observation,
    Timing,
    decide,
    observe,
)

ME, OTHER = "op-a_1", "op-b_2"


def record(holder: str = OTHER, duration: float = LEASE_DURATION, renew: str = "2024-01-01T00:00:00.000000Z",
           rv: str = "1") -> LeaseRecord:
    return LeaseRecord(holder=holder, duration=duration, acquire_time=renew, renew_time=renew, transitions=0,
                       resource_version=rv)


# -- the pure decision -------------------------------------------------------------------------------------------
def test_defaults_are_client_go_s() -> None:
    assert (LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD) == (15.0, 10.0, 2.0)
    with pytest.raises(ValueError):
        Timing(lease_duration=10, renew_deadline=10)


def test_no_lease_is_acquired_by_a_candidate_and_lost_by_a_leader() -> None:
    assert decide(None, ME, now=0, leading=False) is Action.ACQUIRE
    assert decide(None, ME, now=0, leading=True) is Action.LOST


def test_own_lease_is_renewed() -> None:
    obs = Observation(record(holder=ME), observed_at=0)
    assert decide(obs, ME, now=100, leading=True) is Action.RENEW


def test_a_valid_foreign_lease_means_wait_and_expires_by_local_observation() -> None:
    obs = observe(None, record(), now=100.0)
    assert decide(obs, ME, now=100.0, leading=False) is Action.WAIT
    assert decide(obs, ME, now=100.0 + LEASE_DURATION - 0.1, leading=False) is Action.WAIT
    assert decide(obs, ME, now=100.0 + LEASE_DURATION, leading=False) is Action.ACQUIRE


def test_a_changed_record_resets_the_clock_an_unchanged_one_does_not() -> None:
    first = observe(None, record(renew="2024-01-01T00:00:00.000000Z", rv="1"), now=0.0)
    same = observe(first, record(renew="2024-01-01T00:00:00.000000Z", rv="7"), now=10.0)  # only metadata changed
    assert same is first
    renewed = observe(same, record(renew="2024-01-01T00:00:02.000000Z", rv="8"), now=12.0)
    assert renewed is not None and renewed.observed_at == 12.0
    assert decide(renewed, ME, now=12.0 + LEASE_DURATION - 1, leading=False) is Action.WAIT
    assert observe(renewed, None, now=13.0) is None


def test_the_holders_clock_is_irrelevant() -> None:
    # The holder's renewTime far in the past or future changes nothing: only our own observation times count.
    for renew in ("1970-01-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z"):
        obs = observe(None, record(renew=renew), now=50.0)
        assert decide(obs, ME, now=51.0, leading=False) is Action.WAIT
        assert decide(obs, ME, now=50.0 + LEASE_DURATION, leading=False) is Action.ACQUIRE


def test_a_released_lease_is_taken_at_once_and_a_leader_seeing_another_holder_has_lost() -> None:
    released = observe(None, record(holder="", duration=leader.RELEASED_DURATION), now=0.0)
    assert decide(released, ME, now=0.0, leading=False) is Action.ACQUIRE
    assert decide(observe(None, record(), now=0.0), ME, now=0.0, leading=True) is Action.LOST
    assert decide(released, ME, now=0.0, leading=True) is Action.LOST


def test_claim_keeps_acquire_time_on_renewal_and_counts_takeovers() -> None:
    timing = Timing()
    mine = LeaseRecord(ME, 15, "t0", "t1", 3)
    assert leader.claim_spec(mine, ME, timing, "t2") == {
        "holderIdentity": ME, "leaseDurationSeconds": 15, "acquireTime": "t0", "renewTime": "t2",
        "leaseTransitions": 3}
    taken = leader.claim_spec(LeaseRecord(OTHER, 15, "t0", "t1", 3), ME, timing, "t2")
    assert taken["acquireTime"] == "t2" and taken["leaseTransitions"] == 4
    assert leader.claim_spec(None, ME, timing, "t2")["leaseTransitions"] == 0
    assert leader.release_spec(mine, "t3") == {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": "t3",
                                               "renewTime": "t3", "leaseTransitions": 3}


def test_identity_is_the_pod_name_with_a_random_suffix() -> None:
    env = {"POD_NAME": "ocrjob-operator-7d9-x"}
    a, b = leader.make_identity(env), leader.make_identity(env)
    assert a.startswith("ocrjob-operator-7d9-x_") and a != b
    assert leader.make_identity({})  # the hostname


# -- the elector against a fake apiserver ------------------------------------------------------------------------
class FakeLeases:
    """One namespace's Leases with resourceVersion optimistic concurrency; `fail` makes every request fail."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.fail: Exception | None = None
        self.timeouts: list[tuple[float, float]] = []
        self.before_write: Any = None  # called before a write is applied (a concurrent writer)

    def _check(self, timeout: tuple[float, float]) -> None:
        self.timeouts.append(timeout)
        if self.fail is not None:
            raise self.fail

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.rv)
        self.leases[body["metadata"]["name"]] = body
        return copy.deepcopy(body)

    def get_lease(self, namespace: str, name: str, timeout: tuple[float, float] = (5, 30)) -> dict[str, Any]:
        self._check(timeout)
        if name not in self.leases:
            raise NotFound(404, "not found")
        return copy.deepcopy(self.leases[name])

    def create_lease(self, namespace: str, body: dict[str, Any],
                     timeout: tuple[float, float] = (5, 30)) -> dict[str, Any]:
        self._check(timeout)
        if self.before_write:
            self.before_write()
        if body["metadata"]["name"] in self.leases:
            raise Conflict(409, "already exists")
        return self._store(body)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any],
                      timeout: tuple[float, float] = (5, 30)) -> dict[str, Any]:
        self._check(timeout)
        if self.before_write:
            self.before_write()
        if self.leases[name]["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            raise Conflict(409, "the object has been modified")
        return self._store(body)

    def holder(self, name: str = "lease") -> str:
        return self.leases[name]["spec"]["holderIdentity"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(api: FakeLeases, clock: Clock, identity: str = ME, lost: list[str] | None = None) -> Elector:
    sink = lost if lost is not None else []
    epoch = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return Elector(api, "ocrjob-system", "lease", identity, on_lost=sink.append, clock=clock,
                   wall=lambda: epoch + datetime.timedelta(seconds=clock.now), rng=lambda: 0.0)


def test_a_lone_candidate_creates_the_lease_and_renews_it() -> None:
    api, clock = FakeLeases(), Clock()
    a = elector(api, clock)
    assert a.step() is Action.ACQUIRE and a.leading and api.holder() == ME
    rv = api.leases["lease"]["metadata"]["resourceVersion"]
    clock.now += RETRY_PERIOD
    assert a.step() is Action.RENEW and a.leading
    assert api.leases["lease"]["metadata"]["resourceVersion"] != rv
    assert api.leases["lease"]["spec"]["leaseTransitions"] == 0


def test_a_standby_waits_then_takes_over_an_expired_lease() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, ME), elector(api, clock, OTHER)
    a.step()
    assert b.step() is Action.WAIT and not b.leading and b.holder == ME
    clock.now += LEASE_DURATION - 1  # a is gone (no more renewals), but not for long enough yet
    assert b.step() is Action.WAIT
    clock.now += 1
    assert b.step() is Action.ACQUIRE and b.leading and api.holder() == OTHER
    assert api.leases["lease"]["spec"]["leaseTransitions"] == 1


def test_renewals_keep_a_standby_waiting_indefinitely() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, ME), elector(api, clock, OTHER)
    a.step()
    for _ in range(30):
        clock.now += RETRY_PERIOD
        a.step()
        assert b.step() is Action.WAIT
    assert a.leading and not b.leading


def test_a_409_means_somebody_else_won_the_race() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, ME), elector(api, clock, OTHER)
    api.before_write = lambda: (setattr(api, "before_write", None), b.step())  # b writes between a's read and write
    assert a.step() is Action.ACQUIRE
    assert not a.leading and b.leading and api.holder() == OTHER
    assert a.step() is Action.WAIT  # and a now waits for b


def test_api_errors_are_not_loss_until_the_renew_deadline() -> None:
    api, clock, lost = FakeLeases(), Clock(), []
    a = elector(api, clock, ME, lost)
    a.step()
    api.fail = Unavailable(503, "apiserver down")
    clock.now += RENEW_DEADLINE - 0.5
    assert a.step() is None and a.leading and not lost
    # Each request of a leader is bounded by what is left of its deadline.
    assert max(api.timeouts[-1]) <= 0.5 + 1e-9
    api.fail = None
    assert a.step() is Action.RENEW and a.leading  # recovered in time: the deadline restarts
    api.fail = Unavailable(0, "connection refused")
    clock.now += RENEW_DEADLINE
    a.step()
    assert not a.leading and a.lost and len(lost) == 1 and "could not renew" in lost[0]


def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    api, clock, lost = FakeLeases(), Clock(), []
    a = elector(api, clock, ME, lost)
    a.step()
    api.leases["lease"]["spec"]["holderIdentity"] = OTHER  # taken over (we were partitioned)
    assert a.step() is Action.LOST and not a.leading and lost
    assert not a.alive()


def test_release_hands_the_lease_over_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, ME), elector(api, clock, OTHER)
    a.step()
    assert b.step() is Action.WAIT
    a.stop()
    assert a.release() and api.holder() == "" and api.leases["lease"]["spec"]["leaseDurationSeconds"] == 1
    assert not a.leading
    assert b.step() is Action.ACQUIRE and b.leading  # no waiting for the lease to expire
    assert not a.release()  # not ours any more: nothing to release


def test_the_elector_thread_acquires_and_stops() -> None:
    api = FakeLeases()
    lost: list[str] = []
    a = Elector(api, "ocrjob-system", "lease", ME, on_lost=lost.append,
                timing=Timing(lease_duration=1.0, renew_deadline=0.6, retry_period=0.05))
    a.start()
    try:
        assert a.wait_leading(5) and a.alive()
        renewed = threading.Event()
        rv = api.leases["lease"]["metadata"]["resourceVersion"]
        for _ in range(100):
            if api.leases["lease"]["metadata"]["resourceVersion"] != rv:
                renewed.set()
                break
            threading.Event().wait(0.05)
        assert renewed.is_set()
    finally:
        a.stop()
    assert a.release() and api.holder() == "" and not lost
