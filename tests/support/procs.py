"""Process helpers shared by the local cluster: free ports, process groups, bounded waits, log tails."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
# setpriv makes a child die with the thread that started it, so a SIGKILLed test run leaves no orphans.
# Caveat: it is the *thread*: start long-lived children only from threads that live as long as they do.
_SETPRIV = shutil.which("setpriv")


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now, so parallel runs each get their own.

    Random picks below the kernel's ephemeral range (32768+): an outgoing connection cannot grab one
    between this check and the component's bind. Sockets are held until all `n` are picked.
    """
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    try:
        while len(held) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", rng.randrange(20000, 32000)))
            except OSError:
                s.close()
                continue
            held.append(s)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def spawn(argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
          die_with_parent: bool = True) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session/process group, stdout+stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    prefix = [_SETPRIV, "--pdeathsig", "KILL", "--"] if (die_with_parent and _SETPRIV) else []
    with open(log, "ab") as out:
        return subprocess.Popen([*prefix, *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by `pid` (every child was started as a session leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_group(proc: subprocess.Popen[bytes] | int, grace: float = 10.0) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds; reaps our own children."""
    pid = proc if isinstance(proc, int) else proc.pid
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is not None:
                break
        elif not alive(pid):
            break
        time.sleep(0.05)
    signal_group(pid, signal.SIGKILL)  # also catches grandchildren left in the group
    if isinstance(proc, subprocess.Popen):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def wait_until(check: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str = "condition",
               on_timeout: Callable[[], str] | None = None, abort: Callable[[], str | None] | None = None) -> T:
    """Poll `check` until it returns something truthy; TimeoutError (with context) after `timeout` s.

    `abort` returns a reason to give up at once (e.g. the process we wait for has exited).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        reason = abort() if abort else None
        if reason:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise RuntimeError(f"gave up waiting for {what}: {reason}{extra}")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # transient API/connection errors while things start
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def tail(path: Path, lines: int = 200) -> str:
    """The last `lines` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""
