"""The operator reads heartbeats and shard summaries through the typed reader and hands the controller the
JSON objects as stored; a half-written or foreign object reads as absent."""

from __future__ import annotations

from pathlib import Path

from inference_pod.job import layout
from inference_pod.job.records import encode
from inference_pod.job.shard_records import ShardContext
from inference_pod.job.storage import LocalStorage
from inference_pod.shard import results
from ocrjob_operator.storage import JobStorage


def job_storage(root: Path) -> JobStorage:
    storage = JobStorage.__new__(JobStorage)  # the S3 clients are not what is tested here
    storage.dest = LocalStorage(root)
    return storage


def test_heartbeat_and_summary_come_back_as_stored(tmp_path: Path) -> None:
    storage = job_storage(tmp_path)
    tally = results.ShardTally(total=3)
    context = ShardContext(({"kind": "cpu"},), {"det": "d"}, 1, "0", "job-s1-a0")
    beat = results.progress_record("uid", 1, "running", tally, 10.0, context).to_dict()
    summary = results.shard_summary("uid", 1, "succeeded", 0, "done", tally, 10.0, 20.0, context).to_dict()
    storage.dest.put(layout.progress_key("uid", 1), encode(beat))
    storage.dest.put(layout.shard_summary_key("uid", 1), encode(summary))
    assert storage.heartbeat("uid", 1) == beat and storage.read_heartbeat("uid", 1).context.pod == "job-s1-a0"
    assert storage.shard_summary("uid", 1) == summary and storage.read_shard_summary("uid", 1).status == "succeeded"
    early = results.early_failure_summary(75, "no GPU").to_dict()
    storage.dest.put(layout.shard_summary_key("uid", 2), encode(early))
    assert storage.shard_summary("uid", 2) == early


def test_missing_half_written_or_foreign_objects_read_as_absent(tmp_path: Path) -> None:
    storage = job_storage(tmp_path)
    assert storage.heartbeat("uid", 0) is None and storage.shard_summary("uid", 0) is None
    storage.dest.put(layout.progress_key("uid", 0), b'{"schema": "ocrjob.progress/v1", "job_id": "u')
    storage.dest.put(layout.shard_summary_key("uid", 0), b'{"schema": "ocrjob.progress/v1", "status": "failed"}')
    assert storage.heartbeat("uid", 0) is None and storage.shard_summary("uid", 0) is None
