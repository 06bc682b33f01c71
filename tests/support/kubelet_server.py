"""A minimal kubelet HTTPS endpoint: just enough for `kubectl logs` / `read_namespaced_pod_log`.

The apiserver proxies GET /containerLogs/{namespace}/{pod}/{container} to the node's InternalIP and
kubeletEndpoint port, verifying our certificate against its --kubelet-certificate-authority and
presenting its --kubelet-client-certificate, which we require to be signed by the same CA.
Supported query parameters: follow, tailLines, limitBytes (timestamps/sinceSeconds are ignored).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.pki import CertPair


@dataclass(frozen=True)
class LogSource:
    path: Path
    running: Callable[[], bool]  # follow=true streams until this turns False


LogResolver = Callable[[str, str, str], "LogSource | None"]  # (namespace, pod, container) -> source


def _read(f: BinaryIO, tail_lines: int) -> bytes:
    """The whole file or its last `tail_lines` lines; leaves `f` at the end for following."""
    return b"".join(deque(f, maxlen=tail_lines)) if tail_lines >= 0 else f.read()


class KubeletServer:
    def __init__(self, tls: CertPair, client_ca: Path, resolve: LogResolver, port: int = 0) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED  # only the apiserver (a CA-signed client) may read logs
        handler = type("Handler", (_Handler,), {"resolve": staticmethod(resolve)})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        # Handshake lazily in the handler thread, so a silent client cannot block the accept loop.
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"kubelet-{self.port}", daemon=True)

    def start(self) -> KubeletServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    resolve: LogResolver
    protocol_version = "HTTP/1.0"  # body ends when the connection closes: simple for streaming

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            return self._send(200, b"ok")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._send(404, b"not found")
        source = self.resolve(parts[1], parts[2], parts[3])
        if source is None or not source.path.exists():
            return self._send(404, f"container {parts[3]!r} of pod {parts[1]}/{parts[2]} not found".encode())
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        tail_lines = int(query.get("tailLines", -1))
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        with open(source.path, "rb") as f:
            body = _read(f, tail_lines)
            if limit is not None:
                body = body[:limit]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.wfile.write(body)
                if query.get("follow") == "true" and limit is None:
                    self._follow(f, source)

    def _follow(self, f: BinaryIO, source: LogSource) -> None:
        while True:
            chunk = f.read(65536)
            if chunk:
                self.wfile.write(chunk)
                self.wfile.flush()
            elif not source.running():
                self.wfile.write(f.read())
                return
            else:
                time.sleep(0.2)

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
