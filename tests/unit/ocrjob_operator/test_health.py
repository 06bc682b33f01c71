"""The liveness endpoint: served by standbys too; unhealthy when the elector stopped or kopf's loop is stuck."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from ocrjob_operator.health import LOOP_STALE_AFTER, Health, parse_endpoint, serve
from tests.support.procs import free_ports


def test_health_follows_the_elector_and_the_event_loop() -> None:
    now = [0.0]
    alive = [True]
    health = Health(lambda: alive[0], clock=lambda: now[0])
    assert health.check()[0]  # a standby: kopf's loop has not started
    health.beat()
    now[0] += LOOP_STALE_AFTER + 1
    ok, why = health.check()
    assert not ok and "event loop" in why
    health.beat()
    assert health.check()[0]
    alive[0] = False
    assert health.check() == (False, "leader election has stopped")
    assert Health().check()[0]  # without leader election


def test_parse_endpoint() -> None:
    assert parse_endpoint("http://0.0.0.0:8080/healthz") == ("0.0.0.0", 8080, "/healthz")
    for bad in ("0.0.0.0:8080", "http://host/healthz", "https://h:1/x"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_the_endpoint_answers_200_then_503() -> None:
    (port,) = free_ports(1)
    alive = [True]
    server = serve(f"http://127.0.0.1:{port}/healthz", Health(lambda: alive[0]))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"ok"
        alive[0] = False
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert err.value.code == 503
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
