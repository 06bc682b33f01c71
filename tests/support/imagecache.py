"""The image cache on disk: content keys, one lock per image name, atomic publication, pruning.

An image's archive is ``<cache>/images/<name>-<key12>.oci.tar``, where the key is a sha256 over everything
that goes into the image. Knows nothing about buildah or about what an image holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from inference_pod.models import default_cache_dir

KEY_CHARS = 12  # of the sha256 hex digest, in tags and file names
ARCHIVE_SUFFIX = ".oci.tar"
LOCK_TIMEOUT_S = 3600.0
# Archives kept per image name, the newest first: checkouts of different versions share this cache (worktrees,
# a test run beside a development build); pruning all but one key would make them rebuild each other's.
KEEP_PER_NAME = 3  # a cold inference image build downloads Paddle: allow a slow mirror


class ImageCacheError(RuntimeError):
    """The cache cannot be used (a lock not obtained in time)."""


def images_dir() -> Path:
    return default_cache_dir() / "images"


def content_key(parts: Iterable[tuple[str, bytes | str]]) -> str:
    """sha256 over labelled parts; the labels keep ("ab", "c") and ("a", "bc") apart."""
    h = hashlib.sha256()
    for label, value in parts:
        data = value.encode() if isinstance(value, str) else value
        for chunk in (label.encode(), data):
            h.update(len(chunk).to_bytes(8, "big"))
            h.update(chunk)
    return h.hexdigest()


def archive_path(name: str, key: str) -> Path:
    return images_dir() / f"{name}-{key[:KEY_CHARS]}{ARCHIVE_SUFFIX}"


@contextlib.contextmanager
def locked(name: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise builders of `name` across processes (flock: released when the holder dies)."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / f".{name}.lock", "a") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ImageCacheError(f"another build of image {name!r} held its lock for {timeout_s:.0f}s") \
                        from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def temp_path(final: Path) -> Path:
    """A sibling of `final` (same filesystem, so os.replace is atomic) that no other process uses."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def stale_archives(name: str, keep: Path) -> list[Path]:
    """Archives of `name` beyond the KEEP_PER_NAME newest (`keep` always stays), and temp files left by dead
    builders of it."""
    others = []
    for path in images_dir().glob(f"{name}-*{ARCHIVE_SUFFIX}"):
        rest = path.name[len(name) + 1:-len(ARCHIVE_SUFFIX)]
        if path != keep and len(rest) == KEY_CHARS:  # "python-base-…" is not an archive of "python"
            others.append(path)
    others.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    out = others[KEEP_PER_NAME - 1:]
    for path in images_dir().glob(f".{name}-*{ARCHIVE_SUFFIX}.tmp-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            out.append(path)
    return out
