"""One small interface over S3 and the local filesystem, shared by the planner, the loader and the CLI.

Locations are URIs: ``s3://bucket/prefix`` or a local path (``file://`` accepted). Keys handed to and
returned by a ``Storage`` are relative to its root. Listing is paginated and streaming (a generator), so
a million keys are never held in memory twice. Writes are atomic: one PUT on S3, write-then-rename on
disk, so a reader never sees a half-written object.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse


class StorageError(RuntimeError):
    """A storage operation failed for a reason that is not about one missing object."""


class ObjectNotFound(StorageError, KeyError):
    """The object does not exist."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the storage root, '/'-separated
    size: int
    etag: str


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3. Unset fields fall back to boto3's standard chain (env vars, profile, web identity)."""

    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> S3Settings:
        env = dict(os.environ) if env is None else env
        return cls(
            endpoint_url=env.get("OCRJOB_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("OCRJOB_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            path_style=env.get("OCRJOB_S3_PATH_STYLE", "true").lower() not in ("0", "false", "no"),
        )


class Storage(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def download_file(self, key: str, dest: Path) -> None: ...


@dataclass(frozen=True)
class Location:
    """A parsed location URI: scheme 's3' or 'file', bucket ('' for files), and prefix/path."""

    scheme: str
    bucket: str
    path: str

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.path}" if self.path else f"s3://{self.bucket}"
        return self.path

    def join(self, rel: str) -> Location:
        rel = rel.strip("/")
        if not rel:
            return self
        if self.scheme == "s3":
            return Location("s3", self.bucket, f"{self.path.rstrip('/')}/{rel}".lstrip("/"))
        return Location("file", "", str(Path(self.path) / rel))

    def contains(self, other: Location) -> bool:
        """True when `other` is this location or lies below it (used to keep outputs out of inputs)."""
        if self.scheme != other.scheme or self.bucket != other.bucket:
            return False
        if self.scheme == "s3":
            mine, theirs = self.path.strip("/"), other.path.strip("/")
            return mine == "" or theirs == mine or theirs.startswith(mine + "/")
        mine_p, theirs_p = Path(self.path).resolve(), Path(other.path).resolve()
        return theirs_p == mine_p or mine_p in theirs_p.parents


def parse_location(uri: str) -> Location:
    """Parse ``s3://bucket/prefix``, ``file:///path`` or a plain path; raise ValueError saying how to fix it."""
    if not uri or not uri.strip():
        raise ValueError("empty location: give s3://bucket/prefix or a local directory path")
    uri = uri.strip()
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise ValueError(f"{uri!r} has no bucket: write it as s3://bucket/prefix")
        if parsed.query or parsed.fragment:
            raise ValueError(f"{uri!r} has a query or fragment: write it as s3://bucket/prefix")
        return Location("s3", parsed.netloc, parsed.path.strip("/"))
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise ValueError(f"unsupported scheme {scheme!r} in {uri!r}: use s3://bucket/prefix or a local path")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return Location("file", "", str(Path(path).expanduser().absolute()))


class LocalStorage:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key.lstrip("/")).resolve()
        if path != self.root.resolve() and self.root.resolve() not in path.parents:
            raise StorageError(f"key {key!r} escapes the storage root {self.root}")
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Sorted walk, streamed: deterministic order without materialising the whole tree.
        start = self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".ocrjob-tmp-"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                st = full.stat()
                yield ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_size:x}-{st.st_mtime_ns:x}")

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"{self.root / key} does not exist") from exc

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ocrjob-tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def download_file(self, key: str, dest: Path) -> None:
        self_path = self._path(key)
        if not self_path.is_file():
            raise ObjectNotFound(f"{self_path} does not exist")
        LocalStorage(dest.parent).put(dest.name, self_path.read_bytes())


class S3Storage:
    def __init__(self, bucket: str, prefix: str = "", settings: S3Settings | None = None, client=None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings or S3Settings.from_env()
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client or make_s3_client(self.settings)

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1:] if self.prefix else full_key

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        # A trailing '/' on the root keeps 'in' from matching 'input/...'.
        root = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix.lstrip("/")):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):
                        continue  # folder placeholder objects
                    yield ObjectInfo(key=self._rel(obj["Key"]), size=obj["Size"], etag=obj["ETag"].strip('"'))
        except self._client.exceptions.NoSuchBucket as exc:
            raise StorageError(f"bucket {self.bucket!r} does not exist (create it or fix the location)") from exc
        except Exception as exc:
            raise _explain(exc, f"listing {self.uri}/{prefix}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self._client.exceptions.NoSuchKey as exc:
            raise ObjectNotFound(f"s3://{self.bucket}/{self._key(key)} does not exist") from exc
        except Exception as exc:
            raise _explain(exc, f"reading s3://{self.bucket}/{self._key(key)}") from exc

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)
        except Exception as exc:
            raise _explain(exc, f"writing s3://{self.bucket}/{self._key(key)}") from exc

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise _explain(exc, f"checking s3://{self.bucket}/{self._key(key)}") from exc

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise _explain(exc, f"deleting s3://{self.bucket}/{self._key(key)}") from exc

    def download_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".ocrjob-tmp-{dest.name}")
        try:
            self._client.download_file(self.bucket, self._key(key), str(tmp))
            os.replace(tmp, dest)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            if _status(exc) == 404:
                raise ObjectNotFound(f"s3://{self.bucket}/{self._key(key)} does not exist") from exc
            raise _explain(exc, f"downloading s3://{self.bucket}/{self._key(key)}") from exc


def make_s3_client(settings: S3Settings):
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        retries={"max_attempts": 8, "mode": "adaptive"},  # bounded retries with backoff, by botocore
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region or "us-east-1", config=config
    )


def open_storage(uri: str, settings: S3Settings | None = None) -> Storage:
    loc = parse_location(uri)
    if loc.scheme == "s3":
        return S3Storage(loc.bucket, loc.path, settings)
    return LocalStorage(loc.path)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    if code in ("404", "NoSuchKey", "NotFound"):
        return 404
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _explain(exc: Exception, doing: str) -> StorageError:
    """Turn a botocore error into one sentence that says what to fix."""
    if isinstance(exc, StorageError):
        return exc
    name = type(exc).__name__
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
    if name == "NoCredentialsError":
        hint = "no S3 credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or web identity"
    elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
        hint = f"S3 refused the credentials ({code}): check the access key, secret and bucket policy"
    elif code == "NoSuchBucket":
        hint = "the bucket does not exist: create it or fix the location"
    elif name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        hint = f"cannot reach the S3 endpoint ({exc}): check the endpoint URL and network"
    else:
        hint = f"{name}: {exc}"
    return StorageError(f"{doing}: {hint}")
