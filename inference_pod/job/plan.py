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
import heapq
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from inference_pod.job import layout, records
from inference_pod.job.plan_records import Item, Manifest, Plan, PlanShard
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

log = logging.getLogger("ocrjob.plan")

SUPPORTED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pdf"})
MAX_SHARDS = 10_000
MIN_TARGET_SHARD_BYTES = 1 << 20  # 1 MiB: smaller shards only add pod start-up overhead
MAX_TARGET_SHARD_BYTES = 1 << 40  # 1 TiB
_EXAMPLES_KEPT = 20


class PlanError(ValueError):
    """The inputs to planning are wrong; the message says how to fix them."""


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


@dataclass
class Listing:
    """The supported items of a listing plus what was left out and why (nothing is dropped silently)."""

    items: list[Item] = field(default_factory=list)
    unsupported_count: int = 0
    unsupported_examples: list[str] = field(default_factory=list)

    def skipped(self) -> dict:
        return {
            "unsupported": {"count": self.unsupported_count, "examples": self.unsupported_examples},
        }


def is_supported(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in SUPPORTED_SUFFIXES


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


def collect(objects: Iterable[ObjectInfo]) -> Listing:
    """Stream a listing into the supported items, skipping OcrJob's own bookkeeping and results."""
    listing = Listing()
    for obj in objects:
        if obj.key.startswith(layout.JOB_DIR + "/"):
            continue
        if not is_supported(obj.key):
            listing.unsupported_count += 1
            if len(listing.unsupported_examples) < _EXAMPLES_KEPT:
                listing.unsupported_examples.append(obj.key)
            continue
        listing.items.append(Item(obj.key, obj.size, obj.etag))
    return listing


def plan_shards(items: Iterable[Item], policy: ShardingPolicy) -> list[Shard]:
    """Split items into balanced shards: deterministic, no empty shards, items sorted by key within a shard."""
    ordered = sorted(items, key=lambda item: (-item.size, item.key))
    keys = [item.key for item in ordered]
    if len(set(keys)) != len(keys):
        raise PlanError("the listing holds the same key twice; de-duplicate the input manifest")
    count = policy.shards_for(len(ordered), sum(item.size for item in ordered))
    # Heap of (bytes, items, index): the lightest shard (then fewest items, then lowest index) takes next.
    heap = [(0, 0, index) for index in range(count)]
    assigned: list[list[Item]] = [[] for _ in range(count)]
    for item in ordered:
        total, n, index = heapq.heappop(heap)
        assigned[index].append(item)
        heapq.heappush(heap, (total + item.size, n + 1, index))
    return [Shard(index, tuple(sorted(group, key=lambda item: item.key))) for index, group in enumerate(assigned)]


def manifest_record(job_id: str, shard: Shard, input_uri: str, output_uri: str) -> Manifest:
    return Manifest(job_id, shard.index, input_uri, output_uri, shard.items)


def plan_record(
    job_id: str, plan_id: str, shards: list[Shard], listing: Listing, input_uri: str, output_uri: str, seconds: float
) -> Plan:
    entries = tuple(
        PlanShard(shard.index, len(shard.items), shard.total_bytes,
                  layout.plan_manifest_key(job_id, plan_id, shard.index))
        for shard in shards
    )
    return Plan(
        job_id, plan_id, input_uri, output_uri, records.utc_iso(), round(seconds, 3),
        item_count=sum(len(shard.items) for shard in shards), total_bytes=sum(shard.total_bytes for shard in shards),
        shards=entries, skipped=listing.skipped(),
    )


@dataclass(frozen=True)
class InputManifest:
    """An explicit list of input keys (relative to the input root), e.g. the failed items of an earlier job."""

    keys: tuple[str, ...]


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
    for key in keys:
        with contextlib.suppress(StorageError):
            dest.delete(key)


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
) -> Plan:
    """Plan once: return the stored plan if there is one, else list, shard, write this attempt's manifests, then
    create plan.json if still absent. Losing that race returns the plan that won."""
    check_locations(input_uri, output_uri)
    existing = read_plan(dest, job_id)
    if existing is not None:
        return _same_locations(existing, job_id, input_uri, output_uri)
    check_conditional_create(dest, job_id)
    started = time.monotonic()
    objects = list_manifest_items(source, input_manifest) if input_manifest else source.list()
    listing = collect(objects)
    if not listing.items:
        raise PlanError(
            f"no supported documents under {input_uri} ({listing.unsupported_count} unsupported objects, "
            f"e.g. {listing.unsupported_examples[:3]}); supported types: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    shards = plan_shards(listing.items, policy)
    plan = plan_record(job_id, layout.random_id(), shards, listing, input_uri, output_uri, 0.0)
    for shard, entry in zip(shards, plan.shards, strict=True):
        manifest = manifest_record(job_id, shard, input_uri, output_uri)
        dest.put(entry.manifest, json.dumps(manifest.to_dict()).encode())
    plan = replace(plan, planning_seconds=round(time.monotonic() - started, 3))
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
