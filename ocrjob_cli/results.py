"""S3 side of `ocrjob results` and `ocrjob retry`: the job summary, result objects, retry key lists.

The CLI reads S3 with the user's own credentials (the standard AWS chain), never with the job's Secret:
a person sees exactly what their own access allows. The endpoint is `--s3-endpoint`, else
OCRJOB_S3_ENDPOINT / AWS_ENDPOINT_URL, else the job's `spec.s3.endpoint` (which may be an in-cluster address
the user's machine cannot reach, hence the overrides). Locations come from the job: `spec.output.uri` and
the job's uid, which is where the operator writes the plan and summary (`status.summaryLocation`).

Failed documents: summary.json holds the first FAILED_ITEMS_IN_SUMMARY; when it says it holds fewer than there are
(`failed_items_truncated`), every one is read from the failed/ part of each shard that counts failures. Summaries and
indexes of schema v1 (every failed document and every result in one object) are still read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from inference_pod.job import layout, records
from inference_pod.job.bounded import map_bounded
from inference_pod.job.plan import manifest_key
from inference_pod.job.shard_records import ErrorEntry
from inference_pod.job.storage import ObjectNotFound, S3Settings, Storage, StorageError, open_storage
from inference_pod.job.summary_records import IndexEntry
from ocrjob_cli.exit import CliError, ExitCode

THREADS = 16  # parallel S3 requests for checks, deletions and downloads
S3_HINT = ("the CLI uses your own S3 credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...) and "
           "--s3-endpoint or OCRJOB_S3_ENDPOINT when the job's endpoint is not reachable from here")


def s3_settings(spec: dict[str, Any], endpoint: str | None = None, region: str | None = None,
                env: Mapping[str, str] | None = None) -> S3Settings:
    env = os.environ if env is None else env
    ambient = S3Settings.from_env(dict(env))
    s3 = spec.get("s3") or {}
    path_style = ambient.path_style if "OCRJOB_S3_PATH_STYLE" in env else bool(s3.get("pathStyle", True))
    return S3Settings(endpoint_url=endpoint or ambient.endpoint_url or s3.get("endpoint"),
                      region=region or ambient.region or s3.get("region"), path_style=path_style)


def storage_error(exc: Exception, doing: str) -> CliError:
    return CliError(ExitCode.STORAGE, f"{doing}: {exc}; {S3_HINT}")


class JobFiles:
    """The output location of one job, and the bookkeeping the operator wrote there for it."""

    def __init__(self, job: dict[str, Any], settings: S3Settings, opener: Callable[..., Storage] = open_storage):
        self.job = job
        self.uid = job["metadata"]["uid"]
        self.output_uri = ((job.get("spec") or {}).get("output") or {}).get("uri") or ""
        try:
            self.dest = opener(self.output_uri, settings)
        except (ValueError, StorageError) as exc:
            raise storage_error(exc, f"opening {self.output_uri}") from exc

    def _record(self, key: str, schema: str, *older: str) -> dict[str, Any] | None:
        """The record at `key` as the JSON object stored (None when it does not exist). The CLI shows what is
        stored, as stored, so it takes the object as it is and checks only that it is one of that schema (or of an
        `older` one it still reads)."""
        try:
            doc = records.load_record(self.dest, key, None if older else schema)
        except ObjectNotFound:
            return None
        except StorageError as exc:
            raise storage_error(exc, f"reading {self.uri(key)}") from exc
        except records.RecordError as exc:
            raise CliError(ExitCode.STORAGE, f"{self.uri(key)} is not valid JSON of schema {schema}: {exc}") from exc
        if doc.get("schema", schema) not in (schema, *older):
            raise CliError(ExitCode.STORAGE, f"{self.uri(key)} is of schema {doc.get('schema')}, not {schema}: "
                                             "written by another OcrJob version; use the CLI of that version")
        return doc

    def _fetch(self, key: str, why: str) -> tuple[str, bytes]:
        """The object at `key`, which must exist (`why` says who counts on it)."""
        try:
            return key, self.dest.get(key)
        except ObjectNotFound:
            raise CliError(ExitCode.STORAGE, f"{self.uri(key)} does not exist, but {why}: the job's bookkeeping is "
                                             "incomplete; it is rewritten when the job summary is") from None
        except StorageError as exc:
            raise storage_error(exc, f"reading {self.uri(key)}") from exc

    def _lines(self, parts: Iterable[tuple[str, str]], record_type: type[records.R]) -> Iterator[records.R]:
        """The records of the JSON-lines objects (`parts`: each key and why it must exist), in order; THREADS
        fetched at once, at most twice as many held."""
        for key, data in map_bounded(self._fetch, parts, THREADS, "ocrjob-cli"):
            try:
                yield from records.decode_lines(data, record_type, self.uri(key))
            except records.RecordError as exc:
                raise CliError(ExitCode.STORAGE, f"{self.uri(key)} is not valid: {exc}") from exc

    def uri(self, key: str) -> str:
        return f"{self.output_uri.rstrip('/')}/{key}"

    def summary(self) -> dict[str, Any] | None:
        return self._record(layout.job_summary_key(self.uid), records.JOB_SUMMARY_SCHEMA,
                            records.JOB_SUMMARY_V1_SCHEMA)

    def plan(self) -> dict[str, Any] | None:
        return self._record(layout.plan_key(self.uid), records.PLAN_SCHEMA)

    def index(self) -> dict[str, Any] | None:
        return self._record(layout.job_index_key(self.uid), records.INDEX_SCHEMA, records.INDEX_V1_SCHEMA)

    def result_keys(self) -> Iterator[str]:
        """Every planned document's result key, from the results index: its per-shard parts (a v1 index lists
        them itself). NOT_FOUND when the job has no index."""
        index = self.index()
        if index is None:
            raise CliError(ExitCode.NOT_FOUND, f"no results index at {self.uri(layout.job_index_key(self.uid))}")
        if "parts" not in index:  # v1
            yield from (entry["result"] for entry in index.get("results", []))
            return
        parts = ((part["key"], f"the results index lists it with {part['entries']} entries") for part in index["parts"])
        yield from (entry.result for entry in self._lines(parts, IndexEntry))

    def failed_items(self, summary: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every failed document of the job (as stored error entries): the summary's own list when it holds them
        all, else the failed/ part of each shard whose entry counts failures, shard by shard, each in key order."""
        if not summary.get("failed_items_truncated"):
            yield from summary.get("failed_items", [])
            return
        parts = ((layout.failed_items_key(self.uid, shard["index"]),
                  f"the job summary counts {shard['failed']} failed documents in shard {shard['index']}")
                 for shard in summary.get("shards", []) if shard.get("failed"))
        yield from (entry.to_dict() for entry in self._lines(parts, ErrorEntry))

    def with_failed_items(self, summary: dict[str, Any], limit: int | None = None) -> dict[str, Any]:
        """The summary with `failed_items` holding every failed document (in key order), or its first `limit`;
        `failed_items_truncated` then says whether some are left out."""
        held = summary.get("failed_items", [])
        total = summary.get("failed_items_total", len(held))
        if limit is not None and (limit <= len(held) or not summary.get("failed_items_truncated")):
            items = held[:limit]  # the summary's are the job's first by key
        else:
            items = list(islice(self.failed_items(summary), limit))
            if limit is None:
                items.sort(key=lambda item: item["key"])
        return {**summary, "failed_items": items, "failed_items_total": total,
                "failed_items_truncated": len(items) < total}

    def shard_keys(self, manifest_key: str) -> list[str]:
        doc = self._record(manifest_key, records.MANIFEST_SCHEMA) or {}
        return [item["key"] for item in doc.get("items", [])]

    def result(self, key: str) -> dict[str, Any] | None:
        return self._record(layout.result_key(key), records.RESULT_SCHEMA)

    def delete_result(self, key: str) -> None:
        try:
            self.dest.delete(layout.result_key(key))
        except StorageError as exc:
            raise storage_error(exc, f"deleting {self.uri(layout.result_key(key))}") from exc

    def put(self, uri: str, data: bytes) -> None:
        prefix = self.output_uri.rstrip("/") + "/"
        if not uri.startswith(prefix):  # never write anywhere but under the job's own output
            raise CliError(ExitCode.ERROR, f"refusing to write {uri}: not under {prefix}")
        try:
            self.dest.put(uri[len(prefix):], data)
        except StorageError as exc:
            raise storage_error(exc, f"writing {uri}") from exc

    def download(self, key: str, dest: Path) -> bool:
        """False when the object does not exist."""
        try:
            self.dest.download_file(key, dest)
        except ObjectNotFound:
            return False
        except StorageError as exc:
            raise storage_error(exc, f"downloading {self.uri(key)}") from exc
        return True


def require_summary(files: JobFiles, job: dict[str, Any]) -> dict[str, Any]:
    summary = files.summary()
    if summary is not None:
        return summary
    status = job.get("status") or {}
    name = job["metadata"]["name"]
    phase = status.get("phase") or "Pending"
    if phase in ("Succeeded", "Failed") and not status.get("planLocation"):
        raise CliError(ExitCode.NOT_FOUND, f"ocrjob {name} failed before it was planned ({status.get('message')}): "
                                           "there are no results; fix the cause and submit it again")
    progress = status.get("progress", "-")
    where = files.uri(layout.job_summary_key(files.uid))
    raise CliError(ExitCode.NOT_FOUND, f"ocrjob {name} has no summary yet (phase {phase}, {progress} items): it is "
                                       f"written at {where} when the job finishes; follow it with `ocrjob status` "
                                       "or `ocrjob submit --wait`")


# -- retry -------------------------------------------------------------------------------------------------------
def unfinished_shards(summary: dict[str, Any] | None, plan: dict[str, Any]) -> list[int]:
    """Shards whose items may lack results: those the summary does not list as succeeded (all of them when the
    summary has no shard list, e.g. a job the operator failed outright)."""
    shards = (summary or {}).get("shards")
    if not shards:
        return [entry["index"] for entry in plan.get("shards", [])]
    return [s["index"] for s in shards if s.get("status") != "succeeded"]


def candidate_keys(failed_items: Iterable[dict[str, Any]], unfinished_items: Iterable[str]) -> list[str]:
    """Every key that may need another run: the job's failed items (all of them, `JobFiles.failed_items`) plus the
    items of unfinished shards."""
    keys = {item["key"] for item in failed_items}
    keys.update(unfinished_items)
    return sorted(keys)


@dataclass
class RetryPlan:
    keys: list[str]  # to OCR again: no result, or an error record
    error_records: list[str]  # the subset whose error record must go first (the loader skips existing results)
    ok: int  # candidates that turned out to have a good result already


def classify(keys: list[str], read: Callable[[str], dict[str, Any] | None], threads: int = THREADS) -> RetryPlan:
    """Look at each candidate's current result object: absent or an error record → retry it; ok → leave it."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        records = list(pool.map(read, keys))
    retry, errors, ok = [], [], 0
    for key, record in zip(keys, records, strict=True):
        if record is None:
            retry.append(key)
        elif record.get("status") == "error":
            retry.append(key)
            errors.append(key)
        else:
            ok += 1
    return RetryPlan(retry, errors, ok)


def retry_plan(files: JobFiles, job: dict[str, Any]) -> RetryPlan:
    status = job.get("status") or {}
    name = job["metadata"]["name"]
    if status.get("phase") not in ("Succeeded", "Failed"):
        raise CliError(ExitCode.REJECTED, f"ocrjob {name} is {status.get('phase') or 'Pending'}: retry it once it has "
                                          f"finished (or `ocrjob cancel {name}` first)")
    plan = files.plan()
    if plan is None:
        raise CliError(ExitCode.NOT_FOUND, f"ocrjob {name} has no plan at {files.uri(layout.plan_key(files.uid))} "
                                           f"({status.get('message') or 'never planned'}): nothing to retry; fix the "
                                           "cause and submit it again")
    summary = files.summary()
    unfinished = [key for index in unfinished_shards(summary, plan)
                  for key in files.shard_keys(manifest_key(plan, index))]
    return classify(candidate_keys(files.failed_items(summary) if summary else (), unfinished), files.result)


def delete_error_records(files: JobFiles, keys: list[str], threads: int = THREADS) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(files.delete_result, keys))


# -- download ----------------------------------------------------------------------------------------------------
def download_results(files: JobFiles, summary: dict[str, Any], dest: Path, failed_only: bool = False,
                     threads: int = THREADS) -> int:
    """Result objects into `dest` (same relative keys), plus the summary. Returns how many results came."""
    if failed_only:
        keys = [layout.result_key(item["key"]) for item in files.failed_items(summary)]
    else:
        keys = list(files.result_keys())
    root = dest.resolve()
    targets = [(key, (root / key).resolve()) for key in keys]
    for key, path in targets:
        if root not in path.parents:  # a key like '../x' must not write outside the folder
            raise CliError(ExitCode.STORAGE, f"result key {key!r} would be written outside {dest}; not downloading")
    missing: list[str] = []

    def fetch(pair: tuple[str, Path]) -> None:
        if not files.download(*pair):
            missing.append(pair[0])  # not written (an unfinished shard): reported, not fatal

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fetch, targets))
    summary_path = root / layout.job_summary_key(files.uid)
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=1))
    if missing:
        raise CliError(ExitCode.NOT_FOUND, f"downloaded {len(targets) - len(missing)} results to {dest}; "
                                           f"{len(missing)} do not exist (e.g. {sorted(missing)[:3]})")
    return len(targets)
