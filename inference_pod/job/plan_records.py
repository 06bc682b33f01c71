"""The planner's records: the plan (`plan.json`, with its plan id and one entry per shard) and the shard manifests
(`plans/<plan-id>/shards/NNNNN.json`, with their items). Never imports paddle, kubernetes or inference_pod.shard.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any, ClassVar

from inference_pod.job import layout
from inference_pod.job.records import MANIFEST_SCHEMA, PLAN_SCHEMA, Fields, RecordError

# What one planner may hold. With the operator's own ~150 MiB and the planner's transients (a sort run, two 4-byte
# columns) it stays well inside the operator's 1 GiB memory limit (manifests/deployment.yaml): about 7 million keys
# of 40 characters (plan_table.ItemTable).
MAX_TABLE_BYTES = 512 << 20
# A manifest's JSON costs at most about twice its rows in the table (key + ~60 bytes against key + ~33): so no
# manifest a planner wrote is larger than this, and a larger object in its place is refused unread.
MAX_MANIFEST_BYTES = 2 * MAX_TABLE_BYTES


@dataclass(frozen=True)  # not slotted: pickled for spawned workers (see records)
class Item:
    """One planned input document."""

    NAME: ClassVar[str] = "item"
    SCHEMA: ClassVar[str | None] = None

    key: str  # relative to the input root
    size: int
    etag: str = ""

    @classmethod
    def from_dict(cls, doc: Any) -> Item:
        f = Fields(cls.NAME, doc)
        return cls(f.text("key"), f.integer("size"), f.text("etag", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "etag": self.etag}


@dataclass(frozen=True)
class Manifest:
    """What one shard processes: its items, where they come from and where their results go."""

    NAME: ClassVar[str] = "shard manifest"
    SCHEMA: ClassVar[str | None] = MANIFEST_SCHEMA
    MAX_BYTES: ClassVar[int] = MAX_MANIFEST_BYTES

    job_id: str
    shard_index: int
    input: str
    output: str
    items: tuple[Item, ...]

    @property
    def item_count(self) -> int:
        return len(self.items)

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.items)

    @classmethod
    def from_dict(cls, doc: Any) -> Manifest:
        f = Fields(cls.NAME, doc)
        return cls(f.text("job_id"), f.integer("shard_index"), f.text("input"), f.text("output"),
                   f.each("items", Item.from_dict))

    def to_dict(self) -> dict[str, Any]:
        return {**manifest_header(self.job_id, self.shard_index, self.input, self.output, self.item_count,
                                  self.total_bytes),
                "items": [item.to_dict() for item in self.items]}


def manifest_header(job_id: str, shard_index: int, input_uri: str, output_uri: str, item_count: int,
                    total_bytes: int) -> dict[str, Any]:
    """A manifest's fields before its items (`Manifest.to_dict` without "items")."""
    return {"schema": MANIFEST_SCHEMA, "job_id": job_id, "shard_index": shard_index, "input": input_uri,
            "output": output_uri, "item_count": item_count, "total_bytes": total_bytes}


def item_json(key: str, size: int, etag: str) -> str:
    """`json.dumps(Item(key, size, etag).to_dict())`, without building the Item or the dict (the planner writes
    millions of them)."""
    return f'{{"key": {encode_basestring_ascii(key)}, "size": {size}, "etag": {encode_basestring_ascii(etag)}}}'


def encode_manifest(header: dict[str, Any], items: Iterable[str]) -> bytes:
    """The bytes of `json.dumps(manifest.to_dict())` from its header and its items' `item_json`."""
    opening = json.dumps({**header, "items": []})[:-2]  # ends with '"items": ['
    return f"{opening}{', '.join(items)}]}}".encode()


@dataclass(frozen=True, slots=True)
class PlanShard:
    """The plan's entry for one shard: its size and where its manifest is."""

    NAME: ClassVar[str] = "plan shard"
    SCHEMA: ClassVar[str | None] = None

    index: int
    items: int
    bytes: int
    manifest: str

    @classmethod
    def from_dict(cls, doc: Any) -> PlanShard:
        f = Fields(cls.NAME, doc)
        return cls(f.integer("index"), f.integer("items"), f.integer("bytes"), f.text("manifest"))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "items": self.items, "bytes": self.bytes, "manifest": self.manifest}


@dataclass(frozen=True, slots=True)
class Plan:
    """A job's plan, committed once before any shard runs; `plan_id` names the planning attempt that won (its
    manifests are the ones the entries point to); `skipped` says what planning left out and why."""

    NAME: ClassVar[str] = "plan"
    SCHEMA: ClassVar[str | None] = PLAN_SCHEMA

    job_id: str
    plan_id: str
    input: str
    output: str
    created: str
    planning_seconds: float
    item_count: int
    total_bytes: int
    shards: tuple[PlanShard, ...]
    skipped: dict[str, Any] = field(default_factory=dict)

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    @classmethod
    def from_dict(cls, doc: Any) -> Plan:
        f = Fields(cls.NAME, doc)
        shards = f.each("shards", PlanShard.from_dict)
        if f.integer("shard_count") != len(shards):
            raise RecordError(cls.NAME, "shard_count", f"says {doc['shard_count']} but the plan lists {len(shards)}")
        plan_id = f.text("plan_id")
        try:
            layout.check_random_id(plan_id)
        except ValueError as exc:
            raise RecordError(cls.NAME, "plan_id", str(exc)) from exc
        return cls(f.text("job_id"), plan_id, f.text("input"), f.text("output"), f.text("created"),
                   f.number("planning_seconds"), f.integer("item_count"), f.integer("total_bytes"), shards,
                   f.mapping("skipped", {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA, "job_id": self.job_id, "plan_id": self.plan_id, "input": self.input,
            "output": self.output, "created": self.created, "planning_seconds": self.planning_seconds,
            "shard_count": self.shard_count,
            "item_count": self.item_count, "total_bytes": self.total_bytes, "skipped": self.skipped,
            "shards": [shard.to_dict() for shard in self.shards],
        }
