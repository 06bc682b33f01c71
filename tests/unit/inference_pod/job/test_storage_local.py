"""LocalStorage: round trip, atomic writes, root confinement, deterministic streamed listing."""

from __future__ import annotations

import errno
import inspect
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from inference_pod.job import storage as storage_mod
from inference_pod.job.storage import (
    TMP_PREFIX,
    LocalStorage,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "root")


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]


def test_roundtrip(store: LocalStorage, tmp_path: Path) -> None:
    assert not store.exists("a/b.json")
    store.put("a/b.json", b'{"x": 1}')
    assert store.exists("a/b.json")
    assert store.get("a/b.json") == b'{"x": 1}'
    assert (store.root / "a" / "b.json").read_bytes() == b'{"x": 1}'
    store.put("a/b.json", b"replaced")  # overwrite
    assert store.get("/a/b.json") == b"replaced"  # a leading '/' is relative to the root too

    dest = tmp_path / "downloads" / "deep" / "b.json"
    store.download_file("a/b.json", dest)
    assert dest.read_bytes() == b"replaced"
    assert _tmp_files(dest.parent) == []

    store.delete("a/b.json")
    assert not store.exists("a/b.json")
    store.delete("a/b.json")  # deleting a missing key is not an error (as on S3)
    assert [o.key for o in store.list()] == []


def test_missing_objects(store: LocalStorage, tmp_path: Path) -> None:
    store.put("dir/present.json", b"1")
    for key in ("nothing.json", "dir", "dir/present.json/child"):
        with pytest.raises(ObjectNotFound):
            store.get(key)
        with pytest.raises(ObjectNotFound):
            store.download_file(key, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
    assert not store.exists("dir")  # a directory is not an object
    with pytest.raises(ObjectNotFound) as info:
        store.get("nothing.json")
    assert isinstance(info.value, KeyError) and isinstance(info.value, StorageError)
    assert "nothing.json" in str(info.value)


def test_written_files_get_the_usual_mode(store: LocalStorage) -> None:
    old = os.umask(0o022)
    try:
        store.put("x.json", b"{}")
    finally:
        os.umask(old)
    # mkstemp creates 0600; results must be readable like any file written with open()
    assert stat.S_IMODE((store.root / "x.json").stat().st_mode) == 0o666 & ~storage_mod._UMASK


def test_put_writes_a_temp_file_in_the_same_dir_and_renames(store: LocalStorage,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        renames.append((str(src), str(dst)))
        assert Path(dst).exists() is False or Path(dst).read_bytes() == b"old"  # target untouched so far
        real_replace(src, dst)

    store.put("a/x.json", b"old")
    monkeypatch.setattr(storage_mod.os, "replace", spy)
    store.put("a/x.json", b"new")
    (src, dst), = renames
    assert Path(src).parent == Path(dst).parent == store.root / "a"  # same dir: the rename is atomic
    assert Path(src).name.startswith(TMP_PREFIX)
    assert store.get("a/x.json") == b"new"
    assert _tmp_files(store.root) == []


class _DiskFull:
    """Wraps the temp file: writes half of the data, then fails like a full disk."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> _DiskFull:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def test_failure_mid_write_leaves_no_partial_file(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("keep.json", b"previous complete content")
    real_fdopen = os.fdopen
    monkeypatch.setattr(storage_mod.os, "fdopen", lambda fd, *a, **k: _DiskFull(real_fdopen(fd, *a, **k)))

    with pytest.raises(OSError, match="No space left"):
        store.put("new.json", b"x" * 10_000)
    with pytest.raises(OSError, match="No space left"):
        store.put("keep.json", b"y" * 10_000)

    assert not (store.root / "new.json").exists()  # no partial target
    assert store.get("keep.json") == b"previous complete content"  # old version intact
    assert _tmp_files(store.root) == []  # and no temp file left behind
    assert [o.key for o in store.list()] == ["keep.json"]


def test_a_reader_never_sees_a_partial_file(store: LocalStorage) -> None:
    size = 4 << 20
    versions = [b"a" * size, b"b" * size]
    store.put("big.bin", versions[0])
    stop = threading.Event()
    seen: set[bytes] = set()
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = store.get("big.bin")
            if data not in versions:
                bad.append(len(data))
            seen.add(data[:1])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            store.put("big.bin", versions[i % 2])
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert bad == [], f"reader saw partial files of sizes {bad[:5]}"
    assert seen, "the reader ran"


@pytest.mark.parametrize("key", ["../escape.json", "a/../../escape.json", "a/b/../../../escape.json", ".."])
def test_keys_escaping_the_root_are_refused(store: LocalStorage, tmp_path: Path, key: str) -> None:
    (tmp_path / "escape.json").write_bytes(b"outside")
    store.put("a/b/inside.json", b"inside")
    for call in (lambda: store.get(key), lambda: store.put(key, b"x"), lambda: store.exists(key),
                 lambda: store.delete(key), lambda: store.download_file(key, tmp_path / "dl.json")):
        with pytest.raises(StorageError, match="escapes the storage root") as info:
            call()
        assert not isinstance(info.value, ObjectNotFound)
    assert (tmp_path / "escape.json").read_bytes() == b"outside"  # untouched
    assert not (tmp_path / "dl.json").exists()


def test_symlinks_out_of_the_root_are_refused(store: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"secret")
    store.root.mkdir(parents=True)
    (store.root / "link").symlink_to(outside)
    with pytest.raises(StorageError, match="escapes"):
        store.get("link/secret.json")
    with pytest.raises(StorageError, match="escapes"):
        store.put("link/new.json", b"x")
    assert not (outside / "new.json").exists()
    # ... and a symlinked directory is not walked by list()
    assert [o.key for o in store.list()] == []


def test_dot_segments_inside_the_root_are_fine(store: LocalStorage) -> None:
    store.put("a/./b/../c.json", b"1")
    assert store.get("a/c.json") == b"1"


def test_list_is_a_sorted_stream_in_s3_key_order(store: LocalStorage) -> None:
    # Created in scrambled order; includes names that sort differently as 'dir/' than as 'dir'.
    keys = ["b.json", "a/z.png", "a.png", "a-b/1.png", "a/b/c.png", "a0.png", "A.png", "é.png", "a/a.png"]
    for i, key in enumerate(keys):
        store.put(key, b"x" * i)
    listing = store.list()
    assert inspect.isgenerator(listing)
    infos = list(listing)
    assert [o.key for o in infos] == sorted(keys)  # same order as S3 (UTF-8 byte order) gives for these keys
    by_key = {o.key: o for o in infos}
    assert by_key["a/b/c.png"] == ObjectInfo("a/b/c.png", 4, by_key["a/b/c.png"].etag)
    assert all(by_key[k].size == i for i, k in enumerate(keys))
    assert [o.key for o in store.list()] == [o.key for o in infos]  # deterministic


def test_list_skips_temp_files_and_filters_by_prefix(store: LocalStorage) -> None:
    for key in ("in/1.png", "in/sub/2.png", "input/3.png", "in.png", "other/4.png"):
        store.put(key, b"data")
    (store.root / "in" / f"{TMP_PREFIX}abc123").write_bytes(b"partial")  # a write in progress
    (store.root / "in" / "sub" / f"{TMP_PREFIX}zz").write_bytes(b"partial")
    assert [o.key for o in store.list()] == ["in.png", "in/1.png", "in/sub/2.png", "input/3.png", "other/4.png"]
    assert [o.key for o in store.list("in/")] == ["in/1.png", "in/sub/2.png"]  # keys stay root-relative
    assert [o.key for o in store.list("in")] == ["in.png", "in/1.png", "in/sub/2.png", "input/3.png"]
    assert [o.key for o in store.list("in/sub/2")] == ["in/sub/2.png"]
    assert [o.key for o in store.list("nope/")] == []


def test_list_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert list(LocalStorage(tmp_path / "does-not-exist").list()) == []


def test_etag_changes_when_content_changes(store: LocalStorage) -> None:
    store.put("x.json", b"1")
    first = next(store.list()).etag
    store.put("x.json", b"22")
    assert next(store.list()).etag != first


def test_create_writes_only_if_absent(store: LocalStorage) -> None:
    store.create("a/plan.json", b"first")
    assert store.get("a/plan.json") == b"first"
    with pytest.raises(ObjectExists, match="already exists") as info:
        store.create("a/plan.json", b"second")
    assert isinstance(info.value, StorageError)
    assert store.get("a/plan.json") == b"first"  # never overwritten
    store.put("b.json", b"put")
    with pytest.raises(ObjectExists):
        store.create("b.json", b"create")
    assert store.get("b.json") == b"put" and _tmp_files(store.root) == []
    assert stat.S_IMODE(os.stat(store.root / "a" / "plan.json").st_mode) == 0o666 & ~storage_mod._UMASK


def test_of_racing_creates_exactly_one_wins(store: LocalStorage) -> None:
    barrier, won, lost = threading.Barrier(8), [], []

    def create(n: int) -> None:
        barrier.wait()
        try:
            store.create("plan.json", f"writer-{n}".encode())
            won.append(n)
        except ObjectExists:
            lost.append(n)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(lost) == 7
    assert store.get("plan.json") == f"writer-{won[0]}".encode() and _tmp_files(store.root) == []


def test_a_bounded_read_refuses_a_larger_object_unread(store: LocalStorage) -> None:
    store.put("big.json", b"x" * 1001)
    store.put("fits.json", b"x" * 1000)
    assert store.get("fits.json", max_bytes=1000) == b"x" * 1000
    with pytest.raises(ObjectTooLarge, match="1001 bytes or more, more than the 1000 bytes"):
        store.get("big.json", max_bytes=1000)
    assert len(store.get("big.json")) == 1001  # no bound: read whole
    with pytest.raises(ObjectNotFound):
        store.get("missing.json", max_bytes=10)
