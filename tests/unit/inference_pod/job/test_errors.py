"""Typed storage errors decide exit codes and the operator's reaction; message text never does.

The word "credentials" is put into buckets, prefixes and keys: a transient failure on such a location must
stay transient (exit 70, retried), where reading the message used to turn it into "credentials refused" (77).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from inference_pod.job import exit_codes
from inference_pod.job.errors import (
    ConditionalWriteIgnored,
    CredentialsRefused,
    InvalidRequest,
    ObjectExists,
    PermissionDenied,
    StorageError,
    StorageUnavailable,
)
from inference_pod.job.storage import S3Settings, _explain

DOING = "reading s3://credentials-bucket/credentials/scans/credentials.png"


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "credentials"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("exc", "kind", "code"), [
    (client_error("SlowDown", 503), StorageUnavailable, exit_codes.STORAGE_UNAVAILABLE),
    (client_error("InternalError", 500), StorageUnavailable, exit_codes.STORAGE_UNAVAILABLE),
    (client_error("", 502), StorageUnavailable, exit_codes.STORAGE_UNAVAILABLE),
    (EndpointConnectionError(endpoint_url="http://credentials.example:9000"), StorageUnavailable,
     exit_codes.STORAGE_UNAVAILABLE),
    (client_error("InvalidAccessKeyId", 403), CredentialsRefused, exit_codes.CREDENTIALS),
    (client_error("SignatureDoesNotMatch", 403), CredentialsRefused, exit_codes.CREDENTIALS),
    (NoCredentialsError(), CredentialsRefused, exit_codes.CREDENTIALS),
    (client_error("AccessDenied", 403), PermissionDenied, exit_codes.CREDENTIALS),
    (client_error("NoSuchBucket", 404), InvalidRequest, exit_codes.INPUT_ERROR),
    (client_error("InvalidBucketName", 400), InvalidRequest, exit_codes.INPUT_ERROR),
    (client_error("PreconditionFailed", 412), ObjectExists, exit_codes.SYSTEMIC),  # a lost create-if-absent
    (client_error("ConditionalRequestConflict", 409), ObjectExists, exit_codes.SYSTEMIC),
    (client_error("", 412), ObjectExists, exit_codes.SYSTEMIC),
])
def test_each_failure_has_a_type_and_one_exit_code(exc: Exception, kind: type, code: int) -> None:
    typed = _explain(exc, DOING)
    assert type(typed) is kind and "credentials" in str(typed)
    assert exit_codes.for_storage_error(typed) == code


def test_an_unclassified_error_is_treated_as_transient() -> None:
    typed = _explain(ValueError("credentials refused, or so the text says"), DOING)
    assert type(typed) is StorageError and exit_codes.for_storage_error(typed) == exit_codes.SYSTEMIC


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_storage_at_a_credentials_prefix_is_retried_not_refused(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from inference_pod.shard.config import LoaderConfig
    from inference_pod.shard.coordinator import run_shard

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "credentials")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "credentials")
    config = LoaderConfig(
        manifest="s3://credentials/credentials/_ocrjob/credentials/shards/00000.json",
        models=None,  # type: ignore[arg-type]  # never reached: the manifest read fails first
        s3=S3Settings(endpoint_url=f"http://127.0.0.1:{_closed_port()}"), termination_log=str(tmp_path / "log"),
    )
    code, summary = run_shard(config, install_signals=False)
    assert code == exit_codes.STORAGE_UNAVAILABLE, summary
    assert "credentials" in summary.message and "cannot reach the S3 endpoint" in summary.message


def test_the_operator_retries_a_transient_failure_and_fails_fast_on_refusal() -> None:
    from ocrjob_operator.reactions import to_storage_failure

    transient = to_storage_failure(StorageUnavailable(f"{DOING}: S3 refused the credentials? no: 503"))
    assert not transient.fail_job and transient.reason == "WaitingForStorage"
    refused = to_storage_failure(CredentialsRefused("S3 said InvalidAccessKeyId"))
    assert refused.fail_job and refused.reason == "CredentialsRefused"
    assert to_storage_failure(PermissionDenied("AccessDenied")).fail_job
    assert to_storage_failure(InvalidRequest("no such bucket")).reason == "InvalidLocation"


def test_a_store_that_ignores_conditional_writes_fails_the_job_at_once() -> None:
    from ocrjob_operator.reactions import to_storage_failure

    typed = ConditionalWriteIgnored("s3://b/out accepted a create of an existing object")
    reaction = to_storage_failure(typed)
    assert reaction.fail_job and reaction.reason == "ConditionalWriteUnsupported"
    assert exit_codes.for_storage_error(typed) == exit_codes.INPUT_ERROR
