"""The shard planner: a listing in, balanced deterministic shards out. Pure functions, plus plan I/O.

Items are balanced by total bytes with longest-processing-time-first greedy assignment (largest item
to the lightest shard, ties broken by key and shard index), so the same listing always yields the same
plan. The plan is written to storage before any shard runs, and an existing plan is never replaced:
a restarted operator or a re-run of `ocrjob run` continues the plan it already made.

Committed exactly once, even by two planners at the same time (two operator replicas, an operator and an
`ocrjob run`): each attempt writes its manifests under its own random plan id, then creates `plan.json` only if
absent. The loser reads the winner's plan and returns it, so every caller runs the same shards. Before that,
a probe checks that the store honours create-if-absent; one that ignores it raises ConditionalWriteIgnored
(such storage is not supported: the operator fails the job at once rather than risk two plans).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from inference_pod.job import layout, records
from inference_pod.job.bounded import run_bounded
from inference_pod.job.errors import PlanError, PlanTooLarge
from inference_pod.job.plan_balance import Assignment, balance
from inference_pod.job.plan_records import Item, Plan, PlanShard, encode_manifest, item_json, manifest_header
from inference_pod.job.plan_table import MAX_TABLE_BYTES, SUPPORTED_SUFFIXES, ItemTable, Listing, collect
from inference_pod.job.storage import (
    ConditionalWriteIgnored,
    Location,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    parse_location,
)

# Re-exported: callers import the planner's names from here.
__all__ = ["MAX_TABLE_BYTES", "SUPPORTED_SUFFIXES", "Item", "Listing", "PlanError", "PlanTooLarge", "collect"]

log = logging.getLogger("ocrjob.plan")

MAX_SHARDS = 100_000  # the most indexes an Indexed Job may have, and the CRD's shardCount maximum
MIN_TARGET_SHARD_BYTES = 1 << 20  # 1 MiB: smaller shards only add pod start-up overhead
MAX_TARGET_SHARD_BYTES = 1 << 40  # 1 TiB
# Manifests written at once. boto3 clients are thread-safe; the operator's has 16 connections (OPERATOR_LIMITS).
MANIFEST_WRITERS = 16


@dataclass(frozen=True)
class Shard:
    index: int
    items: tuple[Item, ...]

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.items)


@dataclass(frozen=True)
class ShardingPolicy:
    """How many shards: an explicit count, or a target number of bytes per shard. Exactly one applies."""

    shard_count: int | None = None
    target_shard_bytes: int | None = None
    max_shards: int = MAX_SHARDS

    def __post_init__(self) -> None:
        if self.shard_count is not None and self.target_shard_bytes is not None:
            raise PlanError("give either a shard count or a target shard size, not both")
        if not 1 <= self.max_shards <= MAX_SHARDS:
            raise PlanError(f"max shards must be between 1 and {MAX_SHARDS}, got {self.max_shards}")
        if self.shard_count is not None and not 1 <= self.shard_count <= self.max_shards:
            raise PlanError(f"shard count must be between 1 and {self.max_shards}, got {self.shard_count}")
        if self.target_shard_bytes is not None and not (
            MIN_TARGET_SHARD_BYTES <= self.target_shard_bytes <= MAX_TARGET_SHARD_BYTES
        ):
            raise PlanError(
                f"target shard size must be between {MIN_TARGET_SHARD_BYTES} bytes (1 MiB) and "
                f"{MAX_TARGET_SHARD_BYTES} bytes (1 TiB), got {self.target_shard_bytes}"
            )

    def shards_for(self, item_count: int, total_bytes: int) -> int:
        if item_count == 0:
            return 0
        if self.shard_count is not None:
            wanted = self.shard_count
        elif self.target_shard_bytes is not None:
            wanted = math.ceil(total_bytes / self.target_shard_bytes)
        else:
            wanted = 1
        return max(1, min(wanted, item_count, self.max_shards))


def check_locations(input_uri: str, output_uri: str) -> tuple[Location, Location]:
    """Parse both locations and refuse an output equal to, inside or above the input (results would be OCR'd on
    the next run, or land inside the input), and S3 locations with '.', '..' or empty path segments (S3 keys are
    literal: such a location is never what was meant, and the two could not be compared)."""
    for what, uri in (("input", input_uri), ("output", output_uri)):
        _check_segments(what, uri)
    try:
        source, dest = parse_location(input_uri), parse_location(output_uri)
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
    if source.contains(dest):
        raise PlanError(
            f"output {dest.uri!r} lies inside input {source.uri!r}: results would be OCR'd on the next run; "
            "choose an output location outside the input (for example a sibling prefix)"
        )
    if dest.contains(source):
        raise PlanError(
            f"output {dest.uri!r} contains input {source.uri!r}: results would be written inside the input, possibly "
            "over input objects; choose an output location outside the input (for example a sibling prefix)"
        )
    return source, dest


def _check_segments(what: str, uri: str) -> None:
    if not uri.strip().startswith("s3://"):
        return  # a local path is resolved (`Location.contains` compares resolved paths)
    _, _, rest = uri.strip().partition("://")
    bucket, _, path = rest.partition("/")
    segments = path.rstrip("/").split("/") if path.rstrip("/") else []
    if any(s in ("", ".", "..") for s in segments):
        kept: list[str] = []
        for segment in segments:
            if segment == "..":
                kept = kept[:-1]
            elif segment not in ("", "."):
                kept.append(segment)
        fixed = "/".join([f"s3://{bucket}", *kept])
        raise PlanError(f"{what} {uri!r} has an empty, '.' or '..' path segment; S3 keys are literal, so write the "
                        f"location without them, e.g. {fixed!r}")


def plan_shards(items: Iterable[Item], policy: ShardingPolicy) -> list[Shard]:
    """Split items into balanced shards (`plan_balance`): deterministic, no empty shards, items sorted by key within
    a shard. Holds every item; the planner itself keeps a compact table instead (`plan_job`)."""
    table = ItemTable.of(items)
    assignment = _balance(table, policy)
    return [Shard(shard, tuple(table.item(row) for row in assignment.shard_rows(shard)))
            for shard in range(assignment.count)]


def _balance(table: ItemTable, policy: ShardingPolicy) -> Assignment:
    order = table.key_order()  # first: it refuses a key listed twice
    return balance(table, order, policy.shards_for(len(table), table.total_bytes()))


def manifest_bytes(job_id: str, shard: int, input_uri: str, output_uri: str, table: ItemTable,
                   assignment: Assignment) -> bytes:
    """Shard `shard`'s manifest, byte for byte `json.dumps(Manifest(...).to_dict())`, built from the table's rows."""
    header = manifest_header(job_id, shard, input_uri, output_uri, assignment.item_count(shard),
                             assignment.totals[shard])
    return encode_manifest(header, (item_json(*table.entry(row)) for row in assignment.shard_rows(shard)))


@dataclass(frozen=True)
class InputManifest:
    """An explicit list of input keys (relative to the input root), e.g. the failed items of an earlier job."""

    keys: tuple[str, ...]


# The largest input manifest a planner reads (about 500,000 keys of 60 characters): its keys are held several
# times over while they are resolved against the listing, so a larger list must be split into several jobs.
MAX_INPUT_MANIFEST_BYTES = 32 << 20


def parse_input_manifest(data: bytes) -> InputManifest:
    """Accept a JSON list of keys, {"keys": [...]}, or one key per line; refuse anything else clearly."""
    text = data.decode("utf-8", errors="strict").strip()
    if not text:
        raise PlanError("the input manifest is empty: list at least one key (JSON list or one key per line)")
    if text[0] in "[{":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"the input manifest is not valid JSON ({exc}); use a list of keys") from exc
        keys = doc.get("keys") if isinstance(doc, dict) else doc
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise PlanError('the input manifest must be a JSON list of keys or {"keys": [...]} of strings')
    else:
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return InputManifest(tuple(k.lstrip("/") for k in keys))


def list_manifest_items(source: Storage, manifest: InputManifest) -> Iterator[ObjectInfo]:
    """Resolve an input manifest against the input storage. A missing key is an error that names it."""
    wanted = sorted(set(manifest.keys))
    found = {}
    # One listing per distinct parent folder keeps this O(folders) requests instead of O(keys).
    parents = sorted({k.rsplit("/", 1)[0] + "/" if "/" in k else "" for k in wanted})
    wanted_set = set(wanted)
    for parent in parents:
        for obj in source.list(parent):
            if obj.key in wanted_set:
                found[obj.key] = obj
    missing = [k for k in wanted if k not in found]
    if missing:
        raise PlanError(
            f"{len(missing)} key(s) in the input manifest do not exist under {source.uri}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; fix the manifest or the input location"
        )
    for key in wanted:
        yield found[key]


def read_plan(dest: Storage, job_id: str) -> Plan | None:
    """The job's plan, None when it has none yet. A plan object that is not a plan raises RecordError (a
    ValueError): it is never silently replaced by a new plan."""
    try:
        return records.load(dest, layout.plan_key(job_id), Plan)
    except ObjectNotFound:
        return None


def load_plan(dest: Storage, job_id: str) -> dict | None:
    """`read_plan` as the stored JSON object (what the operator's controller works with)."""
    plan = read_plan(dest, job_id)
    return None if plan is None else plan.to_dict()


def manifest_key(plan: Mapping[str, Any], shard: int) -> str:
    """The manifest key of `shard` in a stored plan (its JSON object): the plan's entry is the only record of it."""
    for entry in plan["shards"]:
        if entry["index"] == shard:
            return entry["manifest"]
    raise KeyError(f"the plan has no shard {shard}")


def check_conditional_create(dest: Storage, job_id: str) -> None:
    """Create one probe object twice: the second create must fail. A store that accepts it ignores If-None-Match
    and could let two planners both commit a plan, so planning on it is refused (ConditionalWriteIgnored)."""
    key = layout.probe_key(job_id, layout.random_id())
    dest.create(key, b"{}")
    try:
        dest.create(key, b"{}")
    except ObjectExists:
        return
    finally:
        _delete_quietly(dest, [key])
    raise ConditionalWriteIgnored(
        f"{dest.uri} accepted a create-if-absent (PUT with If-None-Match: *) of an object that already existed: "
        "this S3 endpoint ignores conditional writes, so it cannot guarantee that a job is planned exactly once; "
        "such storage is not supported for planning: use an S3 store that honours If-None-Match (AWS S3, "
        "SeaweedFS, MinIO, Ceph RGW in current versions)"
    )


def _delete_quietly(dest: Storage, keys: Iterable[str]) -> None:
    """Best-effort clean-up of objects nothing reads (a lost attempt's manifests, probes)."""
    def delete(key: str) -> None:
        with contextlib.suppress(StorageError):
            dest.delete(key)

    _run_bounded(delete, ((key,) for key in keys))


def _run_bounded(call: Callable[..., None], calls: Iterable[tuple[Any, ...]]) -> None:
    """`call(*args)` for each args on MANIFEST_WRITERS threads, at most twice as many held (`bounded.run_bounded`)."""
    run_bounded(call, calls, MANIFEST_WRITERS, "ocrjob-plan")


def _same_locations(plan: Plan, job_id: str, input_uri: str, output_uri: str) -> Plan:
    if (plan.input, plan.output) != (input_uri, output_uri):
        raise PlanError(
            f"job {job_id!r} already has a plan for input {plan.input!r} and output "
            f"{plan.output!r}; a planned job's locations cannot change — start a new job"
        )
    return plan


def plan_job(
    job_id: str,
    input_uri: str,
    output_uri: str,
    source: Storage,
    dest: Storage,
    policy: ShardingPolicy,
    input_manifest: InputManifest | None = None,
    limit: int | None = None,
) -> Plan:
    """Plan once: return the stored plan if there is one, else list, shard, write this attempt's manifests, then
    create plan.json if still absent. Losing that race returns the plan that won. The listing is held as an
    `ItemTable` of at most `limit` bytes (default MAX_TABLE_BYTES; PlanTooLarge beyond it); manifests are encoded
    one at a time as they are written, at most 2 x MANIFEST_WRITERS held at once."""
    check_locations(input_uri, output_uri)
    existing = read_plan(dest, job_id)
    if existing is not None:
        return _same_locations(existing, job_id, input_uri, output_uri)
    check_conditional_create(dest, job_id)
    started = time.monotonic()
    objects = list_manifest_items(source, input_manifest) if input_manifest else source.list()
    listing = collect(objects, limit)
    table = listing.table
    if not len(table):
        raise PlanError(
            f"no supported documents under {input_uri} ({listing.unsupported_count} unsupported objects, "
            f"e.g. {listing.unsupported_examples[:3]}); supported types: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    assignment = _balance(table, policy)
    plan = _plan_record(job_id, layout.random_id(), assignment, listing, input_uri, output_uri)
    _run_bounded(dest.put, ((entry.manifest, manifest_bytes(job_id, entry.index, input_uri, output_uri, table,
                                                             assignment)) for entry in plan.shards))
    del listing, table, assignment  # written: from here on only the plan is held
    plan = replace(plan, planning_seconds=round(time.monotonic() - started, 3))
    return _commit(dest, plan, job_id, input_uri, output_uri)


def _plan_record(job_id: str, plan_id: str, assignment: Assignment, listing: Listing, input_uri: str,
                 output_uri: str) -> Plan:
    entries = tuple(
        PlanShard(shard, assignment.item_count(shard), assignment.totals[shard],
                  layout.plan_manifest_key(job_id, plan_id, shard))
        for shard in range(assignment.count)
    )
    return Plan(job_id, plan_id, input_uri, output_uri, records.utc_iso(), 0.0, item_count=len(listing.table),
                total_bytes=sum(assignment.totals), shards=entries, skipped=listing.skipped())


def _commit(dest: Storage, plan: Plan, job_id: str, input_uri: str, output_uri: str) -> Plan:
    """Create plan.json if absent. The loser of a race deletes its manifests and returns the winner's plan."""
    try:
        dest.create(layout.plan_key(job_id), json.dumps(plan.to_dict(), indent=1).encode())
    except ObjectExists:
        winner = read_plan(dest, job_id)
        if winner is None:  # only if someone deleted plan.json right after it was created
            raise StorageError(f"{dest.uri}/{layout.plan_key(job_id)} exists but cannot be read") from None
        if winner.plan_id == plan.plan_id:  # our own create, retried by the client after a lost answer
            return winner
        _delete_quietly(dest, [entry.manifest for entry in plan.shards])  # orphans: no plan points to them
        log.info("job %s: plan %s lost the commit to plan %s, which another planner made; continuing with it",
                 job_id, plan.plan_id, winner.plan_id)
        return _same_locations(winner, job_id, input_uri, output_uri)
    return plan


def make_plan(
    job_id: str,
    input_uri: str,
    output_uri: str,
    source: Storage,
    dest: Storage,
    policy: ShardingPolicy,
    input_manifest: InputManifest | None = None,
) -> dict:
    """`plan_job` as the stored JSON object (what the operator's controller works with)."""
    return plan_job(job_id, input_uri, output_uri, source, dest, policy, input_manifest).to_dict()
