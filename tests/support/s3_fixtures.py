"""pytest fixtures for a real S3 server (SeaweedFS on 127.0.0.1), listed in tests/conftest.py's pytest_plugins.

- ``s3_server`` (session): the running :class:`SeaweedFS`; started once, stopped at session end.
- ``s3_bucket`` (function): name of a fresh, empty bucket on it (unique per test).
- ``s3_env`` (function): env vars for a subprocess: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
  AWS_DEFAULT_REGION, OCRJOB_S3_ENDPOINT; use ``env={**os.environ, **s3_env}``.
- ``s3_environ`` (function): the same applied to os.environ with monkeypatch (and variables that would
  override them removed), for in-process code such as ``open_storage("s3://...")``.

When a test that used ``s3_server`` fails, the SeaweedFS log lines written during that test are attached
to its report (section "SeaweedFS log").
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from collections.abc import Iterator

import pytest

from tests.support.seaweedfs import SeaweedFS

_SERVER = pytest.StashKey[SeaweedFS]()
_LOG_OFFSET = pytest.StashKey[int]()
_LOG_LINES = 80
# Variables that would win over (or mix with) the ones s3_environ sets.
_CONFLICTING_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "OCRJOB_S3_REGION", "OCRJOB_S3_PATH_STYLE")


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS.start(tmp_path_factory.mktemp("seaweedfs"))
    request.config.stash[_SERVER] = server
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(request: pytest.FixtureRequest, s3_server: SeaweedFS) -> str:
    # Readable and unique: <test name>-<random>, within S3's 3-63 chars of [a-z0-9-].
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "t"
    name = f"{stem}-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
def s3_env(s3_server: SeaweedFS) -> dict[str, str]:
    return s3_server.env()


@pytest.fixture
def s3_environ(monkeypatch: pytest.MonkeyPatch, s3_env: dict[str, str]) -> dict[str, str]:
    for name in _CONFLICTING_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    return s3_env


def _uses_server(item: pytest.Item) -> bool:
    return "s3_server" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Remember where the log stands, so a failure shows only what this test caused.
    server = item.config.stash.get(_SERVER, None)
    if _uses_server(item):
        item.stash[_LOG_OFFSET] = _log_size(server) if server else 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed or not _uses_server(item):
        return
    server = item.config.stash.get(_SERVER, None)
    if server is None:
        return  # it failed to start: that error already carries the log tail
    text = _read_from(server, item.stash.get(_LOG_OFFSET, 0))
    report.sections.append((f"SeaweedFS log ({report.when}; {server.log_path})", text or "(nothing new)"))


def _log_size(server: SeaweedFS) -> int:
    try:
        return server.log_path.stat().st_size
    except OSError:
        return 0


def _read_from(server: SeaweedFS, offset: int) -> str:
    try:
        with open(server.log_path, "rb") as f:
            f.seek(offset)
            lines = deque(f, maxlen=_LOG_LINES)
    except OSError as exc:
        return f"(cannot read {server.log_path}: {exc})"
    return b"".join(lines).decode(errors="replace")
