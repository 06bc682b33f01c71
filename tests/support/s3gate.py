"""A gate in front of S3 for faults that must land mid-shard: an HTTP proxy on 127.0.0.1 that forwards every
request to the real S3 server (SeaweedFS) unchanged, Host header and signature included, and can hold the
requests for chosen keys until the test releases them.

A shard whose next document is held has finished the documents before it and cannot finish the rest, however
fast its engine: the fault (an OOM kill, SIGKILL, a drain) lands while it is midway, deterministically. Release
right after the fault, well within the loader's 60-s read timeout, so the hold itself is never a storage fault.

    gate = S3Gate(upstream_port).start()     # pods reach it through RealNode.expose(gate.port)
    gate.hold("in/doc-0008.png")             # GETs of that key wait
    gate.release()                           # they go on; later ones pass
    gate.stop()
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

MAX_HOLD_S = 300  # a forgotten hold must not hang a test run
UPSTREAM_TIMEOUT_S = 120
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "upgrade", "te",
               "trailer"}


class S3Gate:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._held_keys: set[str] = set()
        self._waiting: list[str] = []  # keys of requests held right now
        self._open = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    def start(self) -> S3Gate:
        gate = self

        class Handler(_ProxyHandler):
            owner = gate

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3gate", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def hold(self, *keys: str) -> None:
        """Hold GETs of these object keys (without the bucket) until `release()`."""
        with self._open:
            self._held_keys.update(keys)

    def release(self) -> None:
        with self._open:
            self._held_keys.clear()
            self._open.notify_all()

    def waiting(self) -> list[str]:
        """The keys whose requests are being held now."""
        with self._open:
            return list(self._waiting)

    def _wait_if_held(self, method: str, path: str) -> None:
        key = _object_key(path)
        with self._open:
            if method != "GET" or key not in self._held_keys:
                return
            self._waiting.append(key)
            try:
                self._open.wait_for(lambda: key not in self._held_keys, timeout=MAX_HOLD_S)
            finally:
                self._waiting.remove(key)


def _object_key(path: str) -> str:
    """`/bucket/some/key?query` (path-style addressing) -> `some/key`."""
    parts = unquote(urlsplit(path).path).lstrip("/").split("/", 1)
    return parts[1] if len(parts) == 2 else ""


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: S3Gate
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3 expects; handle_expect_100 answers `Expect: 100-continue`

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        self.owner._wait_if_held(self.command, self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection(*self.owner.upstream, timeout=UPSTREAM_TIMEOUT_S)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers, encode_chunked=False)
            response = upstream.getresponse()
            data = response.read()
        except OSError:  # S3 is down (an outage test): the client sees its connection dropped, as without us
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        finally:
            upstream.close()
        with contextlib.suppress(OSError):  # the client may be gone (its pod was killed while held)
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            # A HEAD answer has no body but announces the object's length.
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward
