from __future__ import annotations

import json
import random

import pytest

from inference_pod.job import layout
from inference_pod.job.plan import (
    MAX_SHARDS,
    Item,
    PlanError,
    ShardingPolicy,
    check_locations,
    collect,
    load_plan,
    make_plan,
    manifest_key,
    parse_input_manifest,
    plan_job,
    plan_shards,
    read_plan,
)
from inference_pod.job.records import RecordError
from inference_pod.job.storage import ConditionalWriteIgnored, LocalStorage, ObjectInfo


def items(sizes: list[int]) -> list[Item]:
    return [Item(f"doc-{i:04d}.png", size, f"e{i}") for i, size in enumerate(sizes)]


def test_shards_are_balanced_by_bytes_and_cover_every_item_once() -> None:
    rng = random.Random(7)
    listing = items([rng.randint(1_000, 5_000_000) for _ in range(500)])
    shards = plan_shards(listing, ShardingPolicy(shard_count=8))
    assert len(shards) == 8
    keys = [item.key for shard in shards for item in shard.items]
    assert sorted(keys) == sorted(item.key for item in listing)
    totals = [shard.total_bytes for shard in shards]
    # Greedy LPT: the spread is at most the largest single item.
    assert max(totals) - min(totals) <= max(item.size for item in listing)
    assert all(list(shard.items) == sorted(shard.items, key=lambda i: i.key) for shard in shards)


def test_plan_is_deterministic_whatever_the_listing_order() -> None:
    listing = items([10, 20, 30, 40, 50, 60, 70, 10, 20, 30])
    shuffled = listing[:]
    random.Random(1).shuffle(shuffled)
    assert plan_shards(listing, ShardingPolicy(shard_count=3)) == plan_shards(shuffled, ShardingPolicy(shard_count=3))


def test_no_empty_shards_when_fewer_items_than_shards() -> None:
    shards = plan_shards(items([5, 5]), ShardingPolicy(shard_count=10))
    assert [len(s.items) for s in shards] == [1, 1]


def test_target_shard_size_decides_the_count() -> None:
    mib = 1 << 20
    shards = plan_shards(items([mib] * 10), ShardingPolicy(target_shard_bytes=3 * mib))
    assert len(shards) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shard_count": 0}, "shard count must be between 1"),
        ({"shard_count": MAX_SHARDS + 1}, "shard count must be between 1"),
        ({"target_shard_bytes": 10}, "target shard size must be between"),
        ({"shard_count": 2, "target_shard_bytes": 1 << 30}, "either a shard count or a target shard size"),
    ],
)
def test_policy_bounds_are_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        ShardingPolicy(**kwargs)


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(PlanError, match="same key twice"):
        plan_shards([Item("a.png", 1), Item("a.png", 1)], ShardingPolicy())


def test_collect_filters_types_and_reports_what_it_left_out() -> None:
    listing = collect(
        ObjectInfo(key, 10, "e")
        for key in ["a.PNG", "b.jpeg", "c.txt", "d.tif", "e.pdf", "f.webp", "g.bmp", "h.jpg", "i.tiff",
                    "_ocrjob/x/plan.json", "notes.json"]
    )
    assert [i.key for i in listing.table] == ["a.PNG", "b.jpeg", "d.tif", "e.pdf", "f.webp", "g.bmp", "h.jpg", "i.tiff"]
    assert listing.unsupported_count == 2
    assert listing.unsupported_examples == ["c.txt", "notes.json"]


def test_result_key_mapping() -> None:
    assert layout.result_key("scans/2024/a.pdf") == "scans/2024/a.pdf.json"
    assert layout.plan_manifest_key("job-1", "00000000000000ff", 3) == \
        "_ocrjob/job-1/plans/00000000000000ff/shards/00003.json"
    with pytest.raises(ValueError, match="plan id"):
        layout.plan_manifest_key("job-1", "../x", 3)
    with pytest.raises(ValueError, match="path segment"):
        layout.job_dir("../evil")


@pytest.mark.parametrize(
    ("source", "dest"),
    [("s3://b/in", "s3://b/in/out"), ("s3://b/in", "s3://b/in"), ("s3://b", "s3://b/out"), ("/data", "/data/out")],
)
def test_output_inside_input_is_refused(source: str, dest: str) -> None:
    with pytest.raises(PlanError, match="inside input"):
        check_locations(source, dest)


@pytest.mark.parametrize(
    ("source", "dest"),
    [("s3://b/data/in", "s3://b/data"), ("s3://b/data/in", "s3://b/data/"), ("s3://b/in", "s3://b"),
     ("/data/in", "/data")],
)
def test_output_above_the_input_is_refused(source: str, dest: str) -> None:
    # input data/in, output data: the result of data/in/in/x.png would be data/in/x.png.json, inside the input
    with pytest.raises(PlanError, match="contains input"):
        check_locations(source, dest)


@pytest.mark.parametrize(
    ("source", "dest", "fixed"),
    [("s3://b/a/./in", "s3://b/out", "s3://b/a/in"), ("s3://b/in", "s3://b/x/../out", "s3://b/out"),
     ("s3://b/a//in", "s3://b/out", "s3://b/a/in"), ("s3://b/in", "s3://b/..", "s3://b")],
)
def test_dot_and_empty_segments_are_refused_with_the_fix(source: str, dest: str, fixed: str) -> None:
    with pytest.raises(PlanError, match="path segment") as err:
        check_locations(source, dest)
    assert f"e.g. {fixed!r}" in str(err.value)


def test_sibling_prefix_is_not_inside() -> None:
    check_locations("s3://b/in", "s3://b/input-results")
    check_locations("s3://b/in/", "s3://b/in-results/")
    check_locations("s3://b/data/in", "s3://b/data-out")


def test_plan_is_written_once_and_reused(tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        (src / f"p{i}.png").write_bytes(b"x" * (i + 1))
    (src / "readme.txt").write_text("not a document")
    out = tmp_path / "out"
    source, dest = LocalStorage(src), LocalStorage(out)
    plan = make_plan("job-a", str(src), str(out), source, dest, ShardingPolicy(shard_count=2))
    assert plan["shard_count"] == 2 and plan["item_count"] == 6
    assert plan["skipped"]["unsupported"]["count"] == 1
    assert plan["shards"][0]["manifest"] == layout.plan_manifest_key("job-a", plan["plan_id"], 0)
    manifest = json.loads(dest.get(manifest_key(plan, 0)))
    assert manifest["input"] == str(src) and manifest["items"]
    # New files after planning do not change a planned job.
    (src / "late.png").write_bytes(b"late")
    again = make_plan("job-a", str(src), str(out), source, dest, ShardingPolicy(shard_count=5))
    assert again == plan == load_plan(dest, "job-a")
    with pytest.raises(PlanError, match="cannot change"):
        make_plan("job-a", str(src), str(tmp_path / "other"), source, dest, ShardingPolicy())


class RivalFirst(LocalStorage):
    """The output of a planner that is overtaken: just before it commits plan.json, `rival` (another planner on the
    same output) runs to completion. Only the order of real storage calls is arranged; nothing is faked."""

    def __init__(self, root, rival) -> None:
        super().__init__(root)
        self.rival, self.rival_plan = rival, None

    def _before_commit(self, key: str) -> None:
        if key == layout.plan_key("job-r") and self.rival is not None:
            rival, self.rival = self.rival, None
            self.rival_plan = rival()

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self._before_commit(key)
        super().create(key, data, content_type)

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self._before_commit(key)  # the same race for a planner that commits with a plain write
        super().put(key, data, content_type)


def test_two_racing_planners_commit_one_plan_and_both_return_it(tmp_path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(6):
        (src / f"early-{i}.png").write_bytes(b"x" * (i + 1))
    source, policy = LocalStorage(src), ShardingPolicy(shard_count=2)

    def rival():  # lists later, when more input has arrived
        for i in range(3):
            (src / f"late-{i}.png").write_bytes(b"y" * (i + 10))
        return plan_job("job-r", str(src), str(out), source, LocalStorage(out), policy)

    first_dest = RivalFirst(out, rival)
    first = plan_job("job-r", str(src), str(out), source, first_dest, policy)
    second = first_dest.rival_plan
    stored = read_plan(LocalStorage(out), "job-r")
    assert second is not None and first == second == stored  # one plan: the one committed first
    assert stored.item_count == 9
    # Every listed key is in exactly one manifest of the committed plan; the loser's manifests are gone.
    keys = [item["key"] for entry in stored.shards
            for item in json.loads(LocalStorage(out).get(entry.manifest))["items"]]
    assert sorted(keys) == sorted(p.name for p in src.iterdir())
    bookkeeping = sorted(o.key for o in LocalStorage(out).list(layout.job_dir("job-r") + "/"))
    assert bookkeeping == sorted([layout.plan_key("job-r"), *(entry.manifest for entry in stored.shards)])


class AnswerLost(LocalStorage):
    """The commit succeeds but its answer is lost; the client's retry is then refused as existing (412)."""

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        super().create(key, data, content_type)
        if key == layout.plan_key("j"):
            super().create(key, data, content_type)


def test_a_retried_commit_that_finds_its_own_plan_keeps_it(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"png")
    dest = AnswerLost(tmp_path / "out")
    plan = plan_job("j", str(tmp_path / "in"), str(tmp_path / "out"), LocalStorage(tmp_path / "in"), dest,
                    ShardingPolicy())
    assert plan == read_plan(dest, "j") and dest.exists(plan.shards[0].manifest)  # its manifests are not orphans


class IgnoresConditions(LocalStorage):
    """A store like an S3-compatible endpoint that ignores If-None-Match: a create overwrites."""

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.put(key, data, content_type)


def test_a_store_that_ignores_create_if_absent_is_refused_before_planning(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"png")
    dest = IgnoresConditions(tmp_path / "out")
    with pytest.raises(ConditionalWriteIgnored, match=f"{dest.uri}.*ignores conditional writes.*not supported"):
        plan_job("j", str(tmp_path / "in"), str(tmp_path / "out"), LocalStorage(tmp_path / "in"), dest,
                 ShardingPolicy())
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []  # no plan, no manifest, no probe


def test_a_plan_records_a_valid_plan_id(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"png")
    dest = LocalStorage(tmp_path / "out")
    plan = make_plan("j", str(tmp_path / "in"), str(tmp_path / "out"), LocalStorage(tmp_path / "in"), dest,
                     ShardingPolicy())
    assert layout.check_random_id(plan["plan_id"]) == plan["plan_id"]
    dest.put(layout.plan_key("j"), json.dumps({**plan, "plan_id": "../../x"}).encode())
    with pytest.raises(RecordError, match="plan_id"):
        read_plan(dest, "j")
    dest.put(layout.plan_key("j"), json.dumps({k: v for k, v in plan.items() if k != "plan_id"}).encode())
    with pytest.raises(RecordError, match="plan_id.*missing"):
        read_plan(dest, "j")


def test_empty_input_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    with pytest.raises(PlanError, match="no supported documents"):
        make_plan("j", str(tmp_path / "in"), str(tmp_path / "out"), LocalStorage(tmp_path / "in"),
                  LocalStorage(tmp_path / "out"), ShardingPolicy())


def test_input_manifest_selects_keys_and_names_missing_ones(tmp_path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png", "c.png"):
        (src / name).write_bytes(b"12")
    manifest = parse_input_manifest(b'["sub/b.png", "a.png"]')
    plan = make_plan("j", str(src), str(tmp_path / "out"), LocalStorage(src), LocalStorage(tmp_path / "out"),
                     ShardingPolicy(), manifest)
    assert plan["item_count"] == 2
    with pytest.raises(PlanError, match="do not exist.*nope.png"):
        make_plan("k", str(src), str(tmp_path / "out2"), LocalStorage(src), LocalStorage(tmp_path / "out2"),
                  ShardingPolicy(), parse_input_manifest(b"a.png\nnope.png\n"))


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b"[1, 2]", "list of keys"), (b"{not json", "not valid JSON"), (b'{"keys": "a"}', "list of keys")],
)
def test_bad_input_manifests_are_explained(data: bytes, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_input_manifest(data)
