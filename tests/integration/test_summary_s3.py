"""The job summary, its per-shard index and failed parts, and `ocrjob results`/`retry` reading them, against a real
S3 server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import pytest

from inference_pod.job import layout, records
from inference_pod.job.storage import S3Settings, open_storage
from inference_pod.job.summary import write_job_summary
from inference_pod.job.summary_records import FAILED_ITEMS_IN_SUMMARY
from ocrjob_cli.results import JobFiles, retry_plan
from tests.support.seaweedfs import SeaweedFS
from tests.support.summary_jobs import doc_key, failing_job

UID = "uid-s3"


@pytest.mark.s3
def test_every_failed_document_beyond_the_cap_reaches_results_and_retry(s3_environ: dict[str, str],
                                                                          s3_server: SeaweedFS,
                                                                          s3_bucket: str) -> None:
    dest = open_storage(f"s3://{s3_bucket}/out")
    failed = set(range(FAILED_ITEMS_IN_SUMMARY + 15))
    plan = failing_job(dest, UID, FAILED_ITEMS_IN_SUMMARY + 30, failed, shards=4)
    job = write_job_summary(dest, UID)
    assert (job["items"]["failed"], len(job["failed_items"]), job["failed_items_truncated"]) == (
        len(failed), FAILED_ITEMS_IN_SUMMARY, True)
    raw = s3_server.client()
    for entry in plan.shards:
        part = raw.get_object(Bucket=s3_bucket, Key=f"out/{layout.index_part_key(UID, entry.index)}")
        assert part["ContentType"] == "application/x-ndjson"
        assert part["Body"].read().count(b"\n") == entry.items
    index = records.load_record(dest, layout.job_index_key(UID), records.INDEX_SCHEMA)
    assert index["entries"] == plan.item_count and len(index["parts"]) == plan.shard_count

    cr = {"metadata": {"name": "scans", "uid": UID}, "spec": {"output": {"uri": f"s3://{s3_bucket}/out"}},
          "status": {"phase": "Succeeded"}}
    files = JobFiles(cr, S3Settings.from_env(s3_environ))
    summary = files.summary()
    assert summary is not None
    every = sorted(map(doc_key, failed))
    assert [item["key"] for item in files.with_failed_items(summary)["failed_items"]] == every
    assert len(list(files.result_keys())) == plan.item_count
    retry = retry_plan(files, cr)
    assert retry.keys == retry.error_records == every and retry.ok == 0
