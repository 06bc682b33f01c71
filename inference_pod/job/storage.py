"""One small interface over S3 and the local filesystem, shared by the planner, the loader and the CLI.

Locations are URIs: ``s3://bucket/prefix`` or a local path (``file://`` accepted). Keys handed to and
returned by a ``Storage`` are relative to its root. Listing is paginated and streaming (a generator), so
a million keys are never held in memory twice. Writes are atomic: one PUT on S3, write-then-rename on
disk, so a reader never sees a half-written object. `create` writes only if the object is absent, atomically
(a conditional PUT with If-None-Match: * on S3, a hard link on disk): of two racing creates exactly one wins,
the other raises ObjectExists.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from inference_pod.job.errors import (
    ConditionalWriteIgnored,
    CredentialsRefused,
    InvalidRequest,
    ObjectExists,
    ObjectNotFound,
    ObjectTooLarge,
    PermissionDenied,
    StorageError,
    StorageUnavailable,
)

# Re-exported: callers may import the errors from here.
__all__ = ["ConditionalWriteIgnored", "CredentialsRefused", "InvalidRequest", "ObjectExists", "ObjectNotFound",
           "ObjectTooLarge",
           "PermissionDenied", "StorageError", "StorageUnavailable"]

TMP_PREFIX = ".ocrjob-tmp-"  # in-progress local writes; never listed
# Characters a bucket name can contain at all (AWS adds length/shape rules; S3-compatible stores vary).
_BUCKET_CHARS = re.compile(r"[A-Za-z0-9._-]+")


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
    def get(self, key: str, max_bytes: int | None = None) -> bytes: ...
    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None: ...
    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None: ...
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

    def split(self) -> tuple[Location, str]:
        """An object's location → (its parent location, its name)."""
        if self.scheme == "s3":
            parent, _, name = self.path.rpartition("/")
            return Location("s3", self.bucket, parent), name
        path = Path(self.path)
        return Location("file", "", str(path.parent)), path.name

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
        if parsed.query or parsed.fragment or uri.endswith(("?", "#")):
            raise ValueError(f"{uri!r} has a query or fragment: write it as s3://bucket/prefix")
        if not _BUCKET_CHARS.fullmatch(parsed.netloc):
            raise ValueError(f"{parsed.netloc!r} in {uri!r} is not a bucket name (letters, digits, '.', '-', '_'; "
                             "no credentials or port): write it as s3://bucket/prefix and set the endpoint "
                             "with OCRJOB_S3_ENDPOINT")
        return Location("s3", parsed.netloc, parsed.path.strip("/"))
    if re.match(r"s3:/?(?!/)", uri, re.IGNORECASE) or uri.startswith("S3://"):
        raise ValueError(f"{uri!r} looks like a mistyped S3 location: write it as s3://bucket/prefix")
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise ValueError(f"unsupported scheme {scheme!r} in {uri!r}: use s3://bucket/prefix or a local path")
    path = uri
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{uri!r} names host {parsed.netloc!r}: write a local path as file:///abs/path "
                             "or just /abs/path")
        if parsed.query or parsed.fragment:
            raise ValueError(f"{uri!r} has a query or fragment: write it as file:///abs/path")
        path = unquote(parsed.path)
        if not path:
            raise ValueError(f"{uri!r} has no path: write it as file:///abs/path")
    return Location("file", "", str(Path(path).expanduser().absolute()))


class LocalStorage:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key.lstrip("/")).resolve()
        if path != self.root.resolve() and self.root.resolve() not in path.parents:
            raise InvalidRequest(f"key {key!r} escapes the storage root {self.root}")
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Streamed depth-first walk, one directory in memory at a time, in S3 key order (a directory sorts
        # as 'name/'), so a local tree lists exactly like the same keys on S3. Pruned by `prefix`.
        if self.root.is_dir():
            yield from self._walk(self.root, "", prefix.lstrip("/"))

    def _walk(self, directory: Path, base: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as it:
                entries = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return  # removed while we were listing
        for name, entry in sorted(entries, key=lambda pair: pair[0]):
            key = base + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix) and not name.startswith(TMP_PREFIX) and entry.is_file():
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_size:x}-{st.st_mtime_ns:x}")

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ObjectTooLarge, before reading it, when it has more than `max_bytes`."""
        try:
            with self._path(key).open("rb") as handle:
                if max_bytes is None:
                    return handle.read()
                check_size(os.fstat(handle.fileno()).st_size, max_bytes, str(self.root / key))
                data = handle.read(max_bytes + 1)  # it may have grown since
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"{self.root / key} does not exist") from exc
        check_size(len(data), max_bytes, str(self.root / key))
        return data

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        _atomic_write(self._path(key), lambda handle: handle.write(data))

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        # A complete temp file hard-linked to the final name: link() fails if the name exists, so a reader sees
        # nothing or the whole object, and of two racing creates exactly one gets the name.
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.link(tmp, path)
        except FileExistsError as exc:
            raise ObjectExists(f"{path} already exists") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def download_file(self, key: str, dest: Path) -> None:
        self_path = self._path(key)
        try:
            source = open(self_path, "rb")  # noqa: SIM115 - closed below, after the atomic write
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"{self_path} does not exist") from exc
        with source:
            _atomic_write(dest, lambda handle: shutil.copyfileobj(source, handle, 1 << 20))


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    """Write via a temp file in the same directory, then rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    try:  # Linux: read it without changing it
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


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
            raise InvalidRequest(f"bucket {self.bucket!r} does not exist (create it or fix the location)") from exc
        except Exception as exc:
            raise _explain(exc, f"listing {self.uri}/{prefix}") from exc

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ObjectTooLarge, before its body is read, when it has more than `max_bytes`."""
        where = f"s3://{self.bucket}/{self._key(key)}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            body = response["Body"]
            if max_bytes is None:
                return body.read()  # type: ignore[no-any-return]
            try:
                check_size(int(response.get("ContentLength") or 0), max_bytes, where)
                data: bytes = body.read(max_bytes + 1)  # a store that misreports the length is still bounded
            finally:
                body.close()
        except self._client.exceptions.NoSuchKey as exc:
            raise ObjectNotFound(f"{where} does not exist") from exc
        except StorageError:
            raise
        except Exception as exc:
            raise _explain(exc, f"reading {where}") from exc
        check_size(len(data), max_bytes, where)
        return data

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)
        except Exception as exc:
            raise _explain(exc, f"writing s3://{self.bucket}/{self._key(key)}") from exc

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        # If-None-Match: * makes the PUT conditional on the key being absent (412, or 409 for a racing
        # conditional PUT). Stores that ignore the header are caught by the planner's probe.
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type,
                                    IfNoneMatch="*")
        except Exception as exc:
            raise _explain(exc, f"creating s3://{self.bucket}/{self._key(key)}") from exc

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
        tmp = dest.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{dest.name}")  # unique per call
        try:
            self._client.download_file(self.bucket, self._key(key), str(tmp))
            os.replace(tmp, dest)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            if _status(exc) == 404:
                raise ObjectNotFound(f"s3://{self.bucket}/{self._key(key)} does not exist") from exc
            raise _explain(exc, f"downloading s3://{self.bucket}/{self._key(key)}") from exc


@dataclass(frozen=True)
class ClientLimits:
    """botocore's retry and timeout bounds for one kind of caller."""

    max_attempts: int = 8  # bounded retries with backoff, by botocore
    retry_mode: str = "adaptive"
    read_timeout: int = 60
    max_pool_connections: int = 32


def make_s3_client(
    settings: S3Settings,
    limits: ClientLimits = ClientLimits(),
    credentials: tuple[str, str, str | None] | None = None,
):
    """An S3 client for `settings`. `credentials` (key id, secret, session token) override the standard
    chain, e.g. the operator acting with a job's own Secret."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        retries={"max_attempts": limits.max_attempts, "mode": limits.retry_mode},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=limits.read_timeout,
        max_pool_connections=limits.max_pool_connections,
    )
    key_id, secret, token = credentials or (None, None, None)
    session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, aws_session_token=token)
    client = session.client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region or "us-east-1", config=config
    )
    client.meta.events.register_first("needs-retry.s3", _limit_connect_retries)
    return client


# A wrong, down or black-holed endpoint fails after CONNECT_ATTEMPTS tries (<= ~3 x 5 s), not after
# botocore's 9 attempts; throttling and 5xx answers keep the full retry budget.
CONNECT_TIMEOUT_S = 5
CONNECT_ATTEMPTS = 3


def _limit_connect_retries(attempts: int, caught_exception: Exception | None = None, **_: object) -> None:
    """botocore needs-retry hook, run first: re-raise a connection error once CONNECT_ATTEMPTS are spent."""
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if caught_exception is not None and attempts >= CONNECT_ATTEMPTS \
            and isinstance(caught_exception, BotoConnectionError):
        raise caught_exception


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


def check_size(size: int, max_bytes: int, where: str) -> None:
    if size > max_bytes:
        raise ObjectTooLarge(f"{where} has {size} bytes or more, more than the {max_bytes} bytes read here: it is not "
                             "an object OcrJob wrote (or was replaced); remove it or write a smaller one")


def _explain(exc: Exception, doing: str) -> StorageError:
    """Turn a botocore error into a typed StorageError whose message says what to fix."""
    if isinstance(exc, StorageError):
        return exc
    from botocore.exceptions import ConnectionError as BotoConnectionError

    name = type(exc).__name__
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return CredentialsRefused(f"{doing}: no S3 credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                  "AWS_PROFILE, or web identity")
    if code == "403":  # a HEAD answer has no body, so no error code: bad keys and a denied access look alike
        return CredentialsRefused(f"{doing}: S3 refused the credentials or the access (403, no details): check the "
                                  "access key, secret and bucket policy")
    if code in _CREDENTIAL_CODES or status == 401:
        return CredentialsRefused(f"{doing}: S3 refused the credentials ({code or status}): check the access key, "
                                  "secret and session token")
    if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
        return PermissionDenied(f"{doing}: S3 denied access ({code or status}): the credentials are not allowed to "
                                "do this; check the bucket policy and the key's permissions")
    if code in _EXISTS_CODES or status == 412:
        return ObjectExists(f"{doing}: the object already exists ({code or status})")
    if code == "NoSuchBucket":
        return InvalidRequest(f"{doing}: the bucket does not exist: create it or fix the location")
    if isinstance(exc, BotoConnectionError) or name in ("ConnectionClosedError", "EndpointConnectionError"):
        return StorageUnavailable(f"{doing}: cannot reach the S3 endpoint ({exc}): check the endpoint URL "
                                  "(OCRJOB_S3_ENDPOINT) and network")
    if name == "ReadTimeoutError":
        return StorageUnavailable(f"{doing}: the S3 endpoint did not answer in time ({exc}): check the endpoint's "
                                  "health and network")
    if status >= 500 or status == 429 or code in _THROTTLING_CODES:
        return StorageUnavailable(f"{doing}: S3 answered {code or status}: the store is unavailable or throttling; "
                                  "retried with backoff")
    if 400 <= status < 500:
        return InvalidRequest(f"{doing}: S3 rejected the request ({code or status}): {exc}")
    return StorageError(f"{doing}: {name}: {exc}")


_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                               "TokenRefreshRequired", "AuthorizationHeaderMalformed"})
# A conditional create that lost: 412 when the object exists, 409 when another conditional write is in flight.
_EXISTS_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                               "ServiceUnavailable", "InternalError", "RequestTimeout"})
