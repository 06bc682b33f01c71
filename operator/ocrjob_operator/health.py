"""The operator's liveness endpoint (`--liveness`), served for the whole life of the process: a standby must pass
the probe too, and kopf's own endpoint only runs inside kopf, i.e. only on the leader.

Healthy: the elector's thread is alive (when leader election is on) and, once kopf runs, its event loop is
responsive (`beat_forever`, a task on kopf's loop, updated `last_beat` within LOOP_STALE_AFTER seconds).
Never imports kopf.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BEAT_INTERVAL = 1.0  # seconds between the event loop's heartbeats
LOOP_STALE_AFTER = 30.0  # an event loop silent this long is stuck (the probe restarts the container)

log = logging.getLogger("ocrjob.health")


class Health:
    """What the endpoint reports. `elector_alive`: None without leader election."""

    def __init__(self, elector_alive: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic, stale_after: float = LOOP_STALE_AFTER) -> None:
        self._elector_alive, self._clock, self._stale_after = elector_alive, clock, stale_after
        self.last_beat: float | None = None  # None: kopf's loop has not started

    def beat(self) -> None:
        self.last_beat = self._clock()

    def check(self) -> tuple[bool, str]:
        """(healthy, why) — the reason is the response body."""
        if self._elector_alive is not None and not self._elector_alive():
            return False, "leader election has stopped"
        if self.last_beat is not None and self._clock() - self.last_beat > self._stale_after:
            return False, f"the operator's event loop has not run for {self._clock() - self.last_beat:.0f}s"
        return True, "ok"

    async def beat_forever(self, interval: float = BEAT_INTERVAL) -> None:
        while True:
            self.beat()
            await asyncio.sleep(interval)


def parse_endpoint(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an endpoint URL such as http://0.0.0.0:8080/healthz; ValueError when malformed."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"{url!r}: expected http://HOST:PORT/PATH")
    return parts.hostname, parts.port, parts.path or "/"


def serve(url: str, health: Health) -> ThreadingHTTPServer:
    """Serve `health` at `url` from a daemon thread; returns the server (`shutdown()` stops it)."""
    host, port, path = parse_endpoint(url)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server calls it by this name
            if urllib.parse.urlsplit(self.path).path != path:
                self.send_error(404)
                return
            ok, why = health.check()
            body = why.encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not news
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="liveness",
                     daemon=True).start()
    return server
