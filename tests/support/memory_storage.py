"""An in-memory `Storage` for planner tests and the planner benchmark: objects in a dict, a listing in the order
given (S3 key order unless told otherwise), create-if-absent under a lock. Thread-safe, as the planner's writers
need."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from inference_pod.job.errors import ObjectExists, ObjectNotFound
from inference_pod.job.storage import ObjectInfo, check_size


class MemoryStorage:
    """`objects` is what was written; `listing` (a callable returning an iterable of ObjectInfo) is what `list`
    yields, so a listing of millions of keys can be generated instead of stored."""

    def __init__(self, uri: str = "s3://memory/out", listing: Callable[[], Iterable[ObjectInfo]] | None = None) -> None:
        self.uri = uri
        self.objects: dict[str, bytes] = {}
        self._listing = listing
        self._lock = threading.Lock()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if self._listing is not None:
            yield from (obj for obj in self._listing() if obj.key.startswith(prefix))
            return
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix))
        for key in keys:
            yield ObjectInfo(key, len(self.objects[key]), f"{len(self.objects[key]):x}")

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            data = self.objects[key]
        except KeyError:
            raise ObjectNotFound(f"{self.uri}/{key} does not exist") from None
        if max_bytes is not None:
            check_size(len(data), max_bytes, f"{self.uri}/{key}")
        return data

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        with self._lock:
            self.objects[key] = bytes(data)

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        with self._lock:
            if key in self.objects:
                raise ObjectExists(f"{self.uri}/{key} already exists")
            self.objects[key] = bytes(data)

    def exists(self, key: str) -> bool:
        return key in self.objects

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def download_file(self, key: str, dest: Path) -> None:
        data = self.get(key)
        dest.parent.mkdir(parents=True, exist_ok=True)  # as LocalStorage and S3Storage do
        dest.write_bytes(data)
