"""The planner at scale: deterministic whatever the listing order, the same assignment as plain LPT, the shard cap,
and what it holds per key (counted in bytes and allocations, never timed)."""

from __future__ import annotations

import heapq
import json
import random
import tracemalloc
from pathlib import Path, PurePosixPath

import pytest

from inference_pod.job import layout, plan, plan_table, records
from inference_pod.job.plan import MAX_SHARDS, PlanError, PlanTooLarge, ShardingPolicy, plan_job, plan_shards
from inference_pod.job.plan_records import Item, Manifest, encode_manifest, item_json, manifest_header
from inference_pod.job.plan_table import ROW_OVERHEAD, ItemTable, collect, is_supported
from inference_pod.job.storage import ObjectInfo, StorageUnavailable
from tests.support.memory_storage import MemoryStorage

MD5 = "0123456789abcdef0123456789abcdef"


def synthetic(count: int, seed: int = 3) -> list[ObjectInfo]:
    """`count` keys in S3 key order, sizes with many ties, ETags of every shape the table stores."""
    rng = random.Random(seed)
    etags = [MD5, MD5.upper(), f"{MD5}-12", "", "1f-17a2b"]
    return [ObjectInfo(f"scans/b{i // 1000:04d}/doc-{i:07d}.pdf", rng.choice([1, 7, 4096]) * rng.randint(1, 50),
                       etags[i % len(etags)]) for i in range(count)]


def _fixed_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What legitimately differs between two planning attempts (plan id, time) made equal."""
    monkeypatch.setattr(layout, "random_id", lambda: "00000000000000aa")
    monkeypatch.setattr(records, "utc_iso", lambda *args: "2026-01-01T00:00:00Z")
    monkeypatch.setattr(plan.time, "monotonic", lambda: 0.0)


def test_the_same_listing_in_any_order_gives_byte_identical_manifests_and_plan(monkeypatch) -> None:
    _fixed_identity(monkeypatch)
    monkeypatch.setattr(plan_table, "SORT_RUN", 30_011)  # several sort runs, merged
    listing = synthetic(200_000) + [ObjectInfo(f"notes/{i:03d}.txt", 1, "") for i in range(50)]
    shuffled = listing[:]
    random.Random(5).shuffle(shuffled)
    stored = []
    for objects in (listing, shuffled):
        source, dest = MemoryStorage("s3://b/in", lambda objects=objects: objects), MemoryStorage("s3://b/out")
        plan_job("job", "s3://b/in", "s3://b/out", source, dest, ShardingPolicy(shard_count=997))
        stored.append(dest.objects)
    assert stored[0] == stored[1]
    assert len(stored[0]) == 997 + 1  # the manifests and plan.json (the probe is gone)
    committed = json.loads(stored[0][layout.plan_key("job")])
    assert committed["item_count"] == 200_000 and committed["shard_count"] == 997
    assert committed["skipped"]["unsupported"] == {"count": 50, "examples": [f"notes/{i:03d}.txt" for i in range(20)]}


def lpt_reference(items: list[Item], count: int) -> list[list[Item]]:
    """The planner's algorithm as it was when it held Item objects (largest first, ties by key, to the lightest)."""
    heap = [(0, 0, index) for index in range(count)]
    assigned: list[list[Item]] = [[] for _ in range(count)]
    for item in sorted(items, key=lambda item: (-item.size, item.key)):
        total, n, index = heapq.heappop(heap)
        assigned[index].append(item)
        heapq.heappush(heap, (total + item.size, n + 1, index))
    return [sorted(group, key=lambda item: item.key) for group in assigned]


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_assignment_is_plain_lpt_by_bytes(monkeypatch, shuffle: bool) -> None:
    monkeypatch.setattr(plan_table, "SORT_RUN", 1_009)
    items = [Item(obj.key, obj.size, obj.etag) for obj in synthetic(20_000)]
    if shuffle:
        random.Random(1).shuffle(items)
    shards = plan_shards(items, ShardingPolicy(shard_count=37))
    assert [list(shard.items) for shard in shards] == lpt_reference(items, 37)


def test_a_key_listed_twice_is_refused_in_any_order() -> None:
    with pytest.raises(PlanError, match="same key twice"):
        plan_shards([Item("b.png", 1), Item("a.png", 2), Item("b.png", 3)], ShardingPolicy())


def test_the_shard_cap_accepts_max_shards_and_refuses_one_more() -> None:
    shards = plan_shards((Item(f"d{i:06d}.png", i % 97 + 1) for i in range(MAX_SHARDS)),
                         ShardingPolicy(shard_count=MAX_SHARDS))
    assert len(shards) == MAX_SHARDS == 100_000 and all(len(shard.items) == 1 for shard in shards)
    with pytest.raises(PlanError, match=f"between 1 and {MAX_SHARDS}"):
        ShardingPolicy(shard_count=MAX_SHARDS + 1)


def test_a_row_holds_its_key_and_etag_bytes_and_nothing_else() -> None:
    table = ItemTable()
    for obj in synthetic(5_000):
        table.append(obj.key, obj.size, obj.etag)
    expected = sum(len(obj.key.encode()) + (16 if obj.etag == MD5 else len(obj.etag)) + ROW_OVERHEAD
                   for obj in synthetic(5_000))
    assert table.nbytes == expected
    assert [table.item(row) for row in range(len(table))] == [Item(o.key, o.size, o.etag) for o in synthetic(5_000)]


def test_collecting_a_listing_allocates_no_object_per_key() -> None:
    objects = synthetic(100_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        listing = collect(objects)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The columns' bytes plus their growth slack; an Item (or a str) per key would add over 100 bytes a key.
    assert held <= 1.3 * listing.table.nbytes + 64_000


def test_a_listing_larger_than_the_limit_stops_while_it_streams() -> None:
    consumed = 0

    def listing():
        nonlocal consumed
        for obj in synthetic(50_000):
            consumed += 1
            yield obj

    with pytest.raises(PlanTooLarge, match="split it into several jobs"):
        collect(listing(), limit=100_000)
    assert consumed <= 100_000 // 40 + plan_table.CHECK_EVERY  # rows are over 40 bytes: stopped near the limit
    assert issubclass(PlanTooLarge, PlanError)  # the operator fails the job; it is never retried


@pytest.mark.parametrize("key", ["a.PNG", "x/b.tar.pdf", "x/.png", ".pdf", "a.", "a", "dir.png/readme", "x/y.Jpeg",
                                 "c.txt", "d.tif", "weird..webp", "a/b/c.TIFF", "no_suffix/", "é/ü.bmp"])
def test_the_suffix_filter_agrees_with_purepath(key: str) -> None:
    assert is_supported(key) == (PurePosixPath(key).suffix.lower() in plan_table.SUPPORTED_SUFFIXES)


def test_a_manifest_is_encoded_as_its_record() -> None:
    items = (Item('we"ird\\ké y/\u00e9\u4e2d.png', 5, MD5), Item("b.pdf", 0, ""), Item("c\n.png", 1, "ABC-3"))
    manifest = Manifest("job", 3, "s3://b/in", "s3://b/out", items)
    header = manifest_header("job", 3, "s3://b/in", "s3://b/out", 3, 6)
    assert encode_manifest(header, (item_json(i.key, i.size, i.etag) for i in items)) == \
        json.dumps(manifest.to_dict()).encode()


class FailingPuts(MemoryStorage):
    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        if key.endswith("00040.json"):
            raise StorageUnavailable("the store is down")
        super().put(key, data, content_type)


def test_a_failed_manifest_write_raises_its_typed_error_and_commits_nothing() -> None:
    source, dest = MemoryStorage("s3://b/in", lambda: synthetic(2_000)), FailingPuts("s3://b/out")
    with pytest.raises(StorageUnavailable):
        plan_job("job", "s3://b/in", "s3://b/out", source, dest, ShardingPolicy(shard_count=100))
    assert layout.plan_key("job") not in dest.objects


def test_the_readme_states_the_shard_cap() -> None:
    readme = (Path(__file__).resolve().parents[4] / "README.md").read_text()
    assert f"`sharding.shardCount` (1–{MAX_SHARDS})" in readme
