"""S3Storage against a real S3 server (SeaweedFS on 127.0.0.1), configured the way the loader is: from env."""

from __future__ import annotations

import hashlib
import inspect
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from inference_pod.job import exit_codes
from inference_pod.job.errors import CredentialsRefused, InvalidRequest
from inference_pod.job.plan import check_conditional_create
from inference_pod.job.storage import (
    TMP_PREFIX,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    S3Settings,
    S3Storage,
    StorageError,
    open_storage,
)
from tests.support.seaweedfs import SeaweedFS


def _storage(uri: str) -> S3Storage:
    storage = open_storage(uri)  # settings and credentials from the environment, as in a pod
    assert isinstance(storage, S3Storage)
    return storage


@pytest.fixture
def store(s3_environ: dict[str, str], s3_bucket: str) -> S3Storage:
    return _storage(f"s3://{s3_bucket}/in")


@pytest.mark.s3
def test_roundtrip(store: S3Storage, s3_server: SeaweedFS, s3_bucket: str, tmp_path: Path) -> None:
    assert not store.exists("a/b.json")
    store.put("a/b.json", b'{"x": 1}')
    assert store.exists("a/b.json")
    assert store.get("a/b.json") == b'{"x": 1}'
    raw = s3_server.client().get_object(Bucket=s3_bucket, Key="in/a/b.json")  # really under the root prefix
    assert raw["Body"].read() == b'{"x": 1}'
    assert raw["ContentType"] == "application/json"
    store.put("a/b.json", b"replaced", content_type="text/plain")
    assert store.get("/a/b.json") == b"replaced"

    dest = tmp_path / "dl" / "deep" / "b.json"
    store.download_file("a/b.json", dest)
    assert dest.read_bytes() == b"replaced"
    assert [p.name for p in dest.parent.iterdir()] == ["b.json"]  # no temp file left

    store.delete("a/b.json")
    assert not store.exists("a/b.json")
    store.delete("a/b.json")  # idempotent, as S3 is
    with pytest.raises(ObjectNotFound):
        store.get("a/b.json")


@pytest.mark.s3
def test_create_writes_only_if_absent(store: S3Storage, s3_server: SeaweedFS, s3_bucket: str) -> None:
    store.create("job/plan.json", b"first")
    with pytest.raises(ObjectExists, match="in/job/plan.json") as info:  # SeaweedFS answers If-None-Match with 412
        store.create("job/plan.json", b"second")
    assert isinstance(info.value, StorageError)
    assert store.get("job/plan.json") == b"first"
    raw = s3_server.client().get_object(Bucket=s3_bucket, Key="in/job/plan.json")
    assert raw["ContentType"] == "application/json"
    check_conditional_create(store, "job")  # the planner's probe passes on this store and cleans up after itself
    assert [o.key for o in store.list("_ocrjob/")] == []


@pytest.mark.s3
def test_of_racing_creates_exactly_one_wins(store: S3Storage) -> None:
    def create(n: int) -> int | None:
        try:
            store.create("race/plan.json", f"writer-{n}".encode())
            return n
        except ObjectExists:
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        winners = [n for n in pool.map(create, range(8)) if n is not None]
    assert len(winners) == 1
    assert store.get("race/plan.json") == f"writer-{winners[0]}".encode()


@pytest.mark.s3
def test_a_bounded_read_refuses_a_larger_object_before_its_body(store: S3Storage) -> None:
    store.put("big.bin", b"x" * (1 << 20), content_type="application/octet-stream")
    with pytest.raises(ObjectTooLarge, match="in/big.bin has 1048576 bytes or more, more than the 1000 bytes"):
        store.get("big.bin", max_bytes=1000)
    assert store.get("big.bin", max_bytes=1 << 20) == b"x" * (1 << 20)
    with pytest.raises(ObjectNotFound):
        store.get("nothing.bin", max_bytes=10)


def test_missing_key(store: S3Storage, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="in/nothing.json") as info:
        store.get("nothing.json")
    assert isinstance(info.value, KeyError) and isinstance(info.value, StorageError)
    with pytest.raises(ObjectNotFound):
        store.download_file("nothing.json", tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file


@pytest.mark.s3
def test_list_gives_root_relative_keys_sizes_and_etags(store: S3Storage, s3_server: SeaweedFS,
                                                       s3_bucket: str) -> None:
    contents = {"b.json": b"bb", "a/1.png": b"1", "a/sub/2.png": b"22" * 100, "c": b""}
    for key, data in contents.items():
        store.put(key, data)
    s3_server.client().put_object(Bucket=s3_bucket, Key="in/folder/", Body=b"")  # console-style folder marker

    listing = store.list()
    assert inspect.isgenerator(listing)
    infos = list(listing)
    assert [o.key for o in infos] == sorted(contents)
    for info in infos:
        assert info == ObjectInfo(info.key, len(contents[info.key]), hashlib.md5(contents[info.key]).hexdigest())
    # A prefix narrows the listing; keys stay relative to the storage root.
    assert [o.key for o in store.list("a/")] == ["a/1.png", "a/sub/2.png"]
    assert [o.key for o in store.list("/a/sub")] == ["a/sub/2.png"]
    assert list(store.list("zzz/")) == []


@pytest.mark.s3
def test_prefix_boundary(s3_environ: dict[str, str], s3_server: SeaweedFS, s3_bucket: str) -> None:
    client = s3_server.client()
    keys = ["in/x.png", "in/sub/y.png", "input2/z.png", "in-other/w.png", "in.png"]
    for key in keys:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"1")
    assert [o.key for o in _storage(f"s3://{s3_bucket}/in").list()] == ["sub/y.png", "x.png"]
    assert [o.key for o in _storage(f"s3://{s3_bucket}/in/").list()] == ["sub/y.png", "x.png"]
    assert [o.key for o in _storage(f"s3://{s3_bucket}/in/sub").list()] == ["y.png"]
    # The bucket root lists everything, with full keys. (Sorted here: SeaweedFS walks its directory tree,
    # so 'in/...' comes before 'in-other/...', unlike AWS's byte order.)
    assert sorted(o.key for o in _storage(f"s3://{s3_bucket}").list()) == sorted(keys)


@pytest.mark.s3
def test_listing_is_paginated_and_streamed(store: S3Storage, s3_server: SeaweedFS, s3_bucket: str) -> None:
    n = 1100  # > 1000, the most one ListObjectsV2 page can hold
    client = s3_server.client()
    keys = [f"many/{i:05d}.png" for i in range(n)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=s3_bucket, Key=f"in/{key}", Body=b"p"), keys))

    pages: list[int] = []
    store._client.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda parsed, **_: pages.append(len(parsed.get("Contents", []))))
    listing: Iterator[ObjectInfo] = store.list("many/")
    assert inspect.isgenerator(listing)
    assert pages == []  # nothing fetched before the first item is asked for
    first = next(listing)
    assert first.key == keys[0]
    assert len(pages) == 1, "the first item comes from the first page, before later pages are fetched"
    rest = [o.key for o in listing]
    assert [first.key, *rest] == keys  # all of them, sorted, no duplicates
    assert len(pages) >= 2 and sum(pages) == n and max(pages) <= 1000


@pytest.mark.s3
def test_missing_bucket(s3_environ: dict[str, str], tmp_path: Path) -> None:
    storage = _storage("s3://no-such-bucket-ocrjob/in")
    with pytest.raises(StorageError, match="no-such-bucket-ocrjob") as info:
        list(storage.list())
    assert "does not exist" in str(info.value)
    for call in (lambda: storage.get("x.json"), lambda: storage.put("x.json", b"{}")):
        with pytest.raises(StorageError, match="no-such-bucket-ocrjob") as info:
            call()
        assert not isinstance(info.value, ObjectNotFound), "a missing bucket is not a missing object"
        assert isinstance(info.value, InvalidRequest)
        assert exit_codes.for_storage_error(info.value) == exit_codes.INPUT_ERROR
        assert "bucket does not exist" in str(info.value)


@pytest.mark.s3
@pytest.mark.parametrize("which", ["secret", "access_key"])
def test_wrong_credentials_are_reported_as_refused(which: str, s3_environ: dict[str, str], s3_bucket: str,
                                                   monkeypatch: pytest.MonkeyPatch, s3_server: SeaweedFS) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="in/x.json", Body=b"{}")
    if which == "secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    storage = _storage(f"s3://{s3_bucket}/in")
    calls: dict[str, Any] = {
        "list": lambda: list(storage.list()),
        "get": lambda: storage.get("x.json"),
        "put": lambda: storage.put("y.json", b"{}"),
        "exists": lambda: storage.exists("x.json"),
        "delete": lambda: storage.delete("x.json"),
    }
    for op, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            call()
        message = str(info.value)
        assert "refused the credentials" in message, (op, message)
        assert "check the access key" in message
        assert s3_bucket in message  # says what was being done
        assert "\n" not in message and "Traceback" not in message  # one sentence, no stack dump
        assert not isinstance(info.value, ObjectNotFound)
        assert isinstance(info.value, CredentialsRefused)
        assert exit_codes.for_storage_error(info.value) == exit_codes.CREDENTIALS
        assert time.monotonic() - started < 5, f"{op}: a refusal is final, not retried"
    assert s3_server.client().get_object(Bucket=s3_bucket, Key="in/x.json")["Body"].read() == b"{}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on return: connections are refused


def _unreachable(endpoint: str) -> S3Storage:
    return S3Storage("bucket", "in", S3Settings(endpoint_url=endpoint, region="us-east-1"))


@pytest.fixture
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")


@pytest.mark.usefixtures("fake_credentials")
def test_refused_endpoint_fails_fast_and_clearly() -> None:
    port = _closed_port()
    storage = _unreachable(f"http://127.0.0.1:{port}")
    for call in (lambda: list(storage.list()), lambda: storage.get("x"), lambda: storage.exists("x")):
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            call()
        elapsed = time.monotonic() - started
        assert "cannot reach the S3 endpoint" in str(info.value)
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "OCRJOB_S3_ENDPOINT" in str(info.value)
        assert elapsed < 3, f"took {elapsed:.1f}s: connection errors must not go through the full retry budget"


@pytest.mark.slow
@pytest.mark.usefixtures("fake_credentials")
def test_black_holed_endpoint_fails_within_bounded_time() -> None:
    # A listener whose accept backlog is full drops further SYNs: connects hang like a firewalled host.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            storage = _unreachable(f"http://127.0.0.1:{port}")
            started = time.monotonic()
            with pytest.raises(StorageError, match="cannot reach the S3 endpoint"):
                storage.get("x")
            elapsed = time.monotonic() - started
    # CONNECT_ATTEMPTS x CONNECT_TIMEOUT_S (3 x 5 s) plus small backoffs, not 9 x 10 s.
    assert elapsed < 25, f"took {elapsed:.1f}s"


@pytest.mark.s3
def test_download_into_existing_file_is_atomic(store: S3Storage, tmp_path: Path) -> None:
    dest = tmp_path / "x.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ObjectNotFound):
        store.download_file("missing.bin", dest)
    assert dest.read_bytes() == b"old"  # a failed download leaves the previous file alone
    store.put("x.bin", b"new" * 1000)
    store.download_file("x.bin", dest)
    assert dest.read_bytes() == b"new" * 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
