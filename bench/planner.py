"""The shard planner against the listing it consumes, side by side in one run; prints a BENCHMARKS.md section.

Measurements (each in its own child process, one after another, so one's memory never hides another's):
  list         stream a synthetic listing (ObjectInfo per key, S3 key order) and drop it: the floor
  plan-before  the planner as it was before issue 21 (`git show BASE:inference_pod/job/plan.py`), same listing
  plan         the planner now, same listing
  s3-list      S3Storage.list over ListObjectsV2 pages parsed by botocore (synthetic XML, no network): the CPU a
               real listing costs the planner's process before any planning
  s3-plan      the planner now over that listing
  plan-10m     the planner now, 10,000,000 keys, with a 1 GiB table limit
Every plan writes 1 manifest per 100 keys (shardCount keys/100, capped at MAX_SHARDS) to a store that keeps only the
bookkeeping (plan.json, probes) and counts the manifest bytes, so what is measured is the planner's memory, not a
store's. RSS added = peak RSS (getrusage) - RSS after imports and before the measurement.
Run: `python bench/planner.py` (under `/work/shared/heavy` on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.measure import finish, load_average, rss_now  # noqa: E402

BASE = "b9426ba"  # main before issue 21
ETAG = "0123456789abcdef0123456789abcdef"
PAGE = 1000  # keys per ListObjectsV2 page


def synthetic(count: int) -> Iterator:
    from inference_pod.job.storage import ObjectInfo

    for i in range(count):
        yield ObjectInfo(f"scans/b{i // 10_000:04d}/doc-{i:08d}.pdf", 1_000 + (i * 7_919) % 5_000_000, ETAG)


class CountingStore:
    """A destination that keeps the planner's bookkeeping (plan.json, probes) and counts the manifests' PUTs and bytes;
    thread-safe, as the planner's writers need."""

    def __init__(self) -> None:
        import threading

        from tests.support.memory_storage import MemoryStorage

        self.kept = MemoryStorage("s3://bench/out")
        self.uri, self.puts, self.bytes, self._lock = self.kept.uri, 0, 0, threading.Lock()

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        with self._lock:
            self.puts, self.bytes = self.puts + 1, self.bytes + len(data)

    def __getattr__(self, name: str):
        return getattr(self.kept, name)


class ListingClient:
    """A boto3-like S3 client whose list_objects_v2 pages are synthetic XML parsed by botocore's own parser."""

    def __init__(self, count: int) -> None:
        import botocore.session
        from botocore.parsers import create_parser

        self.count = count
        self._shape = botocore.session.get_session().get_service_model("s3") \
            .operation_model("ListObjectsV2").output_shape
        self._parser = create_parser("rest-xml")
        self.exceptions = types.SimpleNamespace(NoSuchBucket=LookupError)

    def get_paginator(self, name: str):
        return self

    def paginate(self, **_: object) -> Iterator[dict]:
        for start in range(0, self.count, PAGE):
            yield self._parser.parse({"status_code": 200, "headers": {}, "body": self._page(start)}, self._shape)

    def _page(self, start: int) -> bytes:
        rows = "".join(
            f"<Contents><Key>scans/b{i // 10_000:04d}/doc-{i:08d}.pdf</Key><LastModified>2026-01-01T00:00:00.000Z"
            f"</LastModified><ETag>&quot;{ETAG}&quot;</ETag><Size>{1_000 + (i * 7_919) % 5_000_000}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>" for i in range(start, min(start + PAGE, self.count)))
        return ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>bench</Name><Prefix>in/</Prefix><MaxKeys>{PAGE}</MaxKeys><IsTruncated>true</IsTruncated>"
                f"{rows}</ListBucketResult>").encode()


def _before_planner() -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{BASE}:inference_pod/job/plan.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("plan_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BASE}:inference_pod/job/plan.py", "exec"), module.__dict__)  # the repository's own file
    return module


def _source(kind: str, count: int):
    from inference_pod.job.storage import S3Storage
    from tests.support.memory_storage import MemoryStorage

    if kind == "s3":
        return S3Storage("bench", "in", client=ListingClient(count))
    return MemoryStorage("s3://bench/in", lambda: synthetic(count))


def measure(name: str, count: int) -> dict:
    from inference_pod.job import plan

    source = _source("s3" if name.startswith("s3") else "memory", count)
    planner = _before_planner() if name == "plan-before" else plan
    before = rss_now()
    started = time.perf_counter()
    result: dict = {}
    if name.endswith("list"):
        result["keys"] = sum(1 for _ in source.list())
    else:
        dest = CountingStore()
        policy = planner.ShardingPolicy(shard_count=min(plan.MAX_SHARDS, max(1, count // 100)))
        kwargs = {"limit": 1 << 30} if name == "plan-10m" else {}
        stored = planner.plan_job("bench", "s3://bench/in", "s3://bench/out", source, dest, policy, **kwargs)
        result.update(keys=stored.item_count, shards=stored.shard_count, puts=dest.puts, manifest_mib=dest.bytes >> 20)
    return finish(result, started, before)


def run_child(name: str, count: int) -> dict:
    child = subprocess.run([sys.executable, __file__, "--measure", name, "--keys", str(count)],
                           capture_output=True, text=True)
    if child.returncode:
        sys.exit(f"{name} failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def report(keys: int, s3_keys: int, big: int, results: dict[str, dict]) -> str:
    lst, s3 = results["list"]["seconds"], results.get("s3-list", {}).get("seconds")
    rows = [("stream the listing (floor)", "list", keys, lst),
            ("planner before (main " + BASE + ")", "plan-before", keys, lst),
            ("planner now", "plan", keys, lst),
            ("S3Storage.list, botocore-parsed pages", "s3-list", s3_keys, s3),
            ("planner now, over that listing", "s3-plan", s3_keys, s3),
            ("planner now, 1 GiB table limit", "plan-10m", big, None)]
    load = load_average()
    lines = [
        "## Shard planner (issue 21)",
        "",
        f"Made by `/work/shared/heavy .venv/bin/python bench/planner.py` on {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{platform.machine()}, Python {platform.python_version()}, load average {load} (a shared machine: "
        "compare rows of this one run). Each row is its own process; RSS added = peak RSS - RSS before the "
        "measurement. Manifests: one per 100 keys, counted, not kept.",
        "",
        "| measurement | keys | seconds | / listing | RSS added MiB | peak RSS MiB | PUTs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, name, count, floor in rows:
        r = results.get(name)
        if r is None:
            continue
        ratio = f"{r['seconds'] / floor:.2f}" if floor else "—"
        added = max(0.0, r["rss_added_mib"])
        lines.append(f"| {label} | {count:,} | {r['seconds']:.2f} | {ratio} | {added:.0f} | "
                     f"{r['rss_peak_mib']:.0f} | {r.get('puts', '—')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--s3-keys", type=int, default=1_000_000)
    parser.add_argument("--big-keys", type=int, default=10_000_000)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.keys)))
        return
    plan = [("list", args.keys), ("plan-before", args.keys), ("plan", args.keys), ("s3-list", args.s3_keys),
            ("s3-plan", args.s3_keys), ("plan-10m", args.big_keys)]
    results = {}
    for name, count in plan:
        if count:
            results[name] = run_child(name, count)
            print(name, results[name], file=sys.stderr, flush=True)
    print(report(args.keys, args.s3_keys, args.big_keys, results))


if __name__ == "__main__":
    main()
