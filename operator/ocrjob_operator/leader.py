"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` (and so controller-runtime)
does: exactly one operator instance acts; standbys take over within a bounded time.

- `observe()` and `decide()` are pure. A lease is expired when its record has not changed for its
  `leaseDurationSeconds` *as observed on this candidate's own monotonic clock*: the holder's `renewTime` is
  written for humans and never compared with our clock, so clock skew between machines is irrelevant.
- `Elector` runs them every retryPeriod in a thread with the typed Client: get the Lease, then create it or
  replace it with the observed resourceVersion (a `Conflict` means somebody else wrote first: we did not win).
  API errors are not loss of leadership until renewDeadline has passed since the last successful renewal; each
  request is bounded by what is left of that deadline, so a leader notices the loss before any standby can
  see the lease expire (leaseDuration > renewDeadline). Then `on_lost` is called: the process must stop acting.
- `Elector.release()` on a clean shutdown empties holderIdentity (leaseDurationSeconds 1): a standby takes over
  at its next poll instead of waiting for the lease to expire.

Safe without a cluster (the client is injected); never imports kopf.
"""

from __future__ import annotations

import datetime
import enum
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ocrjob_operator.api.client import Conflict, KubeError, NotFound

# client-go's defaults (and controller-runtime's), declared once.
LEASE_DURATION = 15.0  # a standby takes over after observing no change of the record for this long
RENEW_DEADLINE = 10.0  # a leader that could not renew for this long gives up (before any standby may take over)
RETRY_PERIOD = 2.0  # how often candidates try to acquire and the leader renews
JITTER = 0.2  # standbys poll every RETRY_PERIOD * (1 + JITTER * random()), so they do not march in step
REQUEST_TIMEOUT = (2.0, 5.0)  # connect, read seconds of each Lease request (a leader's: at most what is left)
RELEASED_DURATION = 1  # leaseDurationSeconds of a released lease (as client-go writes it)
LEASE_API_VERSION = "coordination.k8s.io/v1"

log = logging.getLogger("ocrjob.leader")


@dataclass(frozen=True)
class Timing:
    """Election timing; defaults as client-go. Raises ValueError when a leader could outlive its lease."""

    lease_duration: float = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD
    jitter: float = JITTER

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period * (1 + self.jitter) > 0:
            raise ValueError(f"need leaseDuration > renewDeadline > retryPeriod * (1 + jitter) > 0, got {self}")


class Action(enum.Enum):
    ACQUIRE = "acquire"  # create the Lease, or take over a released or expired one
    RENEW = "renew"  # the Lease names us: write a new renewTime
    WAIT = "wait"  # somebody else holds a lease that has not expired
    LOST = "lost"  # we led and the Lease no longer names us: stop acting at once


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says. Equality is the record's content: a write that changes only the resourceVersion
    (labels, say) does not reset a standby's expiry clock."""

    holder: str
    duration: float
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str = field(default="", compare=False)

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or "", duration=float(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0),
                   resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""))


@dataclass(frozen=True)
class Observation:
    """A record and when this candidate first saw it as it is (its own monotonic clock)."""

    record: LeaseRecord
    observed_at: float


def observe(previous: Observation | None, record: LeaseRecord | None, now: float) -> Observation | None:
    """The new observation: the same one while the record is unchanged, a fresh clock when it changed."""
    if record is None:
        return None
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def decide(observed: Observation | None, identity: str, now: float, leading: bool) -> Action:
    """What `identity` does with the Lease it observed (None: there is none), at monotonic time `now`."""
    if observed is None:
        # Somebody deleted the Lease under a leader: a standby may create it any moment, so stop acting.
        return Action.LOST if leading else Action.ACQUIRE
    record = observed.record
    if record.holder == identity:
        return Action.RENEW
    if leading:
        return Action.LOST  # another holder, or released by somebody else: never two leaders
    if not record.holder or now - observed.observed_at >= record.duration:
        return Action.ACQUIRE
    return Action.WAIT


def micro_time(when: datetime.datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claim_spec(record: LeaseRecord | None, identity: str, timing: Timing, stamp: str) -> dict[str, Any]:
    """The spec naming `identity` as holder: a renewal keeps acquireTime and leaseTransitions; a takeover sets
    acquireTime and counts a transition; a new Lease starts at 0 transitions."""
    ours = record is not None and record.holder == identity
    transitions = 0 if record is None else record.transitions + (0 if ours else 1)
    return {"holderIdentity": identity, "leaseDurationSeconds": int(timing.lease_duration),
            "acquireTime": (record.acquire_time if ours and record else None) or stamp, "renewTime": stamp,
            "leaseTransitions": transitions}


def release_spec(record: LeaseRecord, stamp: str) -> dict[str, Any]:
    """The spec of a released lease: no holder, expired after a second (client-go's release)."""
    return {"holderIdentity": "", "leaseDurationSeconds": RELEASED_DURATION, "acquireTime": stamp,
            "renewTime": stamp, "leaseTransitions": record.transitions}


def make_identity(env: Mapping[str, str] | None = None) -> str:
    """This process's candidate identity: the pod name (POD_NAME from the downward API, else the hostname) and
    a random suffix, so two processes on one host, or a restarted container, are never mistaken for each other."""
    env = os.environ if env is None else env
    return f"{env.get('POD_NAME') or socket.gethostname()}_{secrets.token_hex(5)}"


class LeaseClient(Protocol):
    def get_lease(self, namespace: str, name: str, timeout: tuple[float, float] = ...) -> dict[str, Any]: ...

    def create_lease(self, namespace: str, body: dict[str, Any],
                     timeout: tuple[float, float] = ...) -> dict[str, Any]: ...

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any],
                      timeout: tuple[float, float] = ...) -> dict[str, Any]: ...


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Elector:
    """Campaigns for the Lease `namespace/name` in a daemon thread. `leading` says whether we hold it now;
    `on_lost(reason)` is called once, from the elector's thread, when we held it and no longer may act."""

    def __init__(self, client: LeaseClient, namespace: str, name: str, identity: str,
                 on_lost: Callable[[str], None], timing: Timing = Timing(),
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime.datetime] = _utcnow,
                 rng: Callable[[], float] = random.random) -> None:
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.timing, self._on_lost = timing, on_lost
        self._clock, self._wall, self._rng = clock, wall, rng
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease: dict[str, Any] | None = None  # the last Lease read or written
        self._observed: Observation | None = None
        self._renewed_at = 0.0  # monotonic start of the last successful write (when leading)
        self._logged_holder: str | None = None
        self.lost = False

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    @property
    def holder(self) -> str | None:
        """The holder last observed ('' : released; None: no Lease seen yet)."""
        return self._observed.record.holder if self._observed else None

    def wait_leading(self, timeout: float) -> bool:
        return self._leading.wait(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.lost

    # -- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> Elector:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = sum(REQUEST_TIMEOUT) * 2 + 1) -> None:
        """Stop campaigning (the current round finishes first, bounded by its request timeouts)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def release(self) -> bool:
        """After `stop()`: hand the Lease over at once if we still hold it. True when it was released."""
        if not self.leading or self._lease is None or self.lost:
            return False
        self._leading.clear()
        record = LeaseRecord.from_lease(self._lease)
        body = {**self._lease, "spec": release_spec(record, micro_time(self._wall()))}
        try:
            self.client.replace_lease(self.namespace, self.name, body, timeout=REQUEST_TIMEOUT)
        except KubeError as exc:  # a Conflict: somebody already took it; otherwise it expires by itself
            log.warning("could not release the Lease %s/%s (%s: %s); it expires in %ss", self.namespace, self.name,
                        type(exc).__name__, exc.message, record.duration)
            return False
        log.info("released the Lease %s/%s", self.namespace, self.name)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a bug: keep campaigning; a leader still gives up at its renew deadline
                log.exception("leader election round failed")
                self._check_deadline()
            if self._stop.is_set():
                break
            period = self.timing.retry_period
            self._stop.wait(period if self.leading else period * (1 + self.timing.jitter * self._rng()))

    # -- one round -----------------------------------------------------------------------------------------
    def step(self) -> Action | None:
        """One round: read, decide, write. Returns the action decided (None when the Lease could not be read)."""
        if self._check_deadline():
            return Action.LOST
        started = self._clock()
        try:
            lease: dict[str, Any] | None = self.client.get_lease(self.namespace, self.name,
                                                                 timeout=self._timeout(started))
        except NotFound:
            lease = None
        except KubeError as exc:
            self._failed("read", exc)
            return None
        record = LeaseRecord.from_lease(lease) if lease is not None else None
        self._lease = lease
        self._observed = observe(self._observed, record, self._clock())
        action = decide(self._observed, self.identity, self._clock(), self.leading)
        if action is Action.WAIT:
            self._log_holder()
        elif action is Action.LOST:
            self._lose(f"the Lease {self.namespace}/{self.name} now names {self.holder or 'nobody'!r}"
                       if record is not None else f"the Lease {self.namespace}/{self.name} was deleted")
        else:
            self._write(lease, record, started)
        return action

    def _write(self, lease: dict[str, Any] | None, record: LeaseRecord | None, started: float) -> None:
        spec = claim_spec(record, self.identity, self.timing, micro_time(self._wall()))
        timeout = self._timeout(self._clock())
        try:
            if lease is None:
                body = {"apiVersion": LEASE_API_VERSION, "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
                written = self.client.create_lease(self.namespace, body, timeout=timeout)
            else:  # carries the observed resourceVersion: Conflict when anybody wrote since we read
                written = self.client.replace_lease(self.namespace, self.name, {**lease, "spec": spec},
                                                    timeout=timeout)
        except Conflict:
            log.debug("the Lease %s/%s changed before our write: somebody else won this round", self.namespace,
                      self.name)
            self._check_deadline()
            return
        except KubeError as exc:
            self._failed("write", exc)
            return
        self._lease = written
        self._observed = observe(self._observed, LeaseRecord.from_lease(written), self._clock())
        self._renewed_at = started
        if not self.leading:
            log.info("became the leader: %s holds the Lease %s/%s (previous holder %r)", self.identity,
                     self.namespace, self.name, record.holder if record else None)
            self._leading.set()

    def _timeout(self, now: float) -> tuple[float, float]:
        """A standby's requests get REQUEST_TIMEOUT; a leader's at most what is left of its renew deadline."""
        if not self.leading:
            return REQUEST_TIMEOUT
        left = max(0.1, self._renewed_at + self.timing.renew_deadline - now)
        return min(REQUEST_TIMEOUT[0], left), min(REQUEST_TIMEOUT[1], left)

    def _failed(self, what: str, exc: KubeError) -> None:
        log.warning("leader election: could not %s the Lease %s/%s (%s: %s)", what, self.namespace, self.name,
                    type(exc).__name__, exc.message)
        self._check_deadline()

    def _check_deadline(self) -> bool:
        if self.leading and self._clock() - self._renewed_at >= self.timing.renew_deadline:
            self._lose(f"could not renew the Lease {self.namespace}/{self.name} for {self.timing.renew_deadline}s")
            return True
        return False

    def _lose(self, reason: str) -> None:
        self._leading.clear()
        self.lost = True
        self._stop.set()
        log.error("leadership lost: %s", reason)
        self._on_lost(reason)

    def _log_holder(self) -> None:
        holder = self.holder
        if holder != self._logged_holder:
            self._logged_holder = holder
            log.info("standby %s: %r leads (Lease %s/%s); waiting", self.identity, holder, self.namespace, self.name)
