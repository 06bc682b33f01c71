"""The job summary and results index of a large job, before and after issue 21 part 2, each in its own process;
prints (or, with --write, puts into BENCHMARKS.md) a section.

The synthetic job: N documents `scans/bNNNN/doc-NNNNNNNN.pdf` round-robin over S shards (as the planner's balancing
spreads keys), every one with a result in the listing, 1 % with an error record; every shard succeeded and its
summary lists its errors (so no result is read: the cost measured is listing, manifests and writing). The store
holds the plan, the manifests and the shard summaries as bytes made before the measurement, generates the output
listing on the fly, keeps summary.json and index.json, and only counts the other PUTs (index and failed parts).
Measurements:
  list     stream the output listing and drop it: the floor
  before   write_job_summary as it was (`git show BASE:` summary.py, stored_counts.py, summary_records.py)
  now      write_job_summary now (SUMMARY_WORKERS shards at once)
  now-1    write_job_summary now, one shard at a time
  now-big  write_job_summary now, 10x the documents and the shards (the same shard size): what grows with the job
RSS added = peak RSS (getrusage) - RSS after the store is built and before the measurement.
Run: `python bench/summary.py --write` (under `/work/shared/heavy` on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.measure import finish, load_average, rss_now  # noqa: E402

BASE = "b06a2a1"  # main before issue 21 part 2
JOB = "bench"
PLAN_ID = "0123456789abcdef"
FAILED_EVERY = 100  # one document in a hundred has an error record
SECTION = "## Job summary and index (issue 21, part 2)"


def doc_key(i: int) -> str:
    return f"scans/b{i // 10_000:04d}/doc-{i:08d}.pdf"


def failed(position: int) -> bool:
    return position % FAILED_EVERY == 7


class SyntheticJob:
    """The store: bookkeeping as bytes, a generated listing of every result, PUTs of parts counted, not kept."""

    def __init__(self, count: int, shards: int) -> None:
        from inference_pod.job import layout, records
        from inference_pod.job.plan_records import Item, Manifest, Plan, PlanShard

        self.uri, self.count, self.puts, self.put_bytes = "s3://bench/out", count, 0, 0
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        entries = []
        for s in range(shards):
            keys = [doc_key(i) for i in range(s, count, shards)]
            manifest_key = layout.plan_manifest_key(JOB, PLAN_ID, s)
            entries.append(PlanShard(s, len(keys), 1000 * len(keys), manifest_key))
            manifest = Manifest(JOB, s, "s3://bench/in", self.uri, tuple(Item(k, 1000, "e") for k in keys))
            self.objects[manifest_key] = records.encode(manifest.to_dict())
            errors = [{"key": k, "code": "corrupt", "message": "bad bytes"} for p, k in enumerate(keys) if failed(p)]
            self.objects[layout.shard_summary_key(JOB, s)] = records.encode({
                "schema": records.SHARD_SUMMARY_SCHEMA, "status": "succeeded", "job_id": JOB, "shard_index": s,
                "items": {"total": len(keys), "ok": len(keys) - len(errors), "failed": len(errors),
                          "pages": len(keys) - len(errors)},
                "error_codes": {"corrupt": len(errors)} if errors else {}, "errors": errors})
        plan = Plan(JOB, PLAN_ID, "s3://bench/in", self.uri, "2026-01-01T00:00:00Z", 0.0, count, 1000 * count,
                    tuple(entries))
        self.objects[layout.plan_key(JOB)] = records.encode(plan.to_dict())
        self._kept = {layout.job_summary_key(JOB), layout.job_index_key(JOB)}

    def list(self, prefix: str = "") -> Iterator:
        from inference_pod.job.storage import ObjectInfo

        for i in range(self.count):
            yield ObjectInfo(doc_key(i) + ".json", 2000, "e")

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        from inference_pod.job.errors import ObjectNotFound

        try:
            return self.objects[key]  # what OcrJob wrote itself: within every bound
        except KeyError:
            raise ObjectNotFound(key) from None

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        with self._lock:
            self.puts, self.put_bytes = self.puts + 1, self.put_bytes + len(data)
            if key in self._kept:
                self.objects[key] = bytes(data)


def _before() -> types.ModuleType:
    """write_job_summary as it was at BASE: its three modules from git, each standing in for the current one while
    the next is loaded (a child process does nothing else)."""
    module = None
    for name in ("stored_counts", "summary_records", "summary"):
        path = f"inference_pod/job/{name}.py"
        source = subprocess.run(["git", "show", f"{BASE}:{path}"], cwd=REPO, check=True, capture_output=True,
                                text=True).stdout
        module = types.ModuleType(f"inference_pod.job.{name}")
        sys.modules[module.__name__] = module  # dataclasses and the next module look it up
        exec(compile(source, f"{BASE}:{path}", "exec"), module.__dict__)  # the repository's own file
    assert module is not None
    return module


def measure(name: str, count: int, shards: int) -> dict[str, Any]:
    writer = _before() if name == "before" else None
    from inference_pod.job import layout

    store = SyntheticJob(count, shards)
    if writer is None:
        from inference_pod.job import summary as writer
    before = rss_now()
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if name == "list":
        result["keys"] = sum(1 for _ in store.list())
    else:
        kwargs: dict[str, Any] = {"workers": 1} if name == "now-1" else {}
        written = writer.write_job_summary(store, JOB, **kwargs)
        items = written["items"]
        expected_failed = sum(1 for s in range(shards) for p in range(len(range(s, count, shards))) if failed(p))
        assert (items["ok"] + items["failed"], items["failed"], items["pending"]) == (count, expected_failed, 0)
        result.update(keys=count, failed=items["failed"], failed_in_summary=len(written["failed_items"]),
                      puts=store.puts, put_mib=store.put_bytes / (1 << 20),
                      summary_kib=len(store.objects[layout.job_summary_key(JOB)]) / 1024,
                      index_kib=len(store.objects[layout.job_index_key(JOB)]) / 1024)
    return finish(result, started, before)


def run_child(name: str, count: int, shards: int) -> dict[str, Any]:
    child = subprocess.run([sys.executable, __file__, "--measure", name, "--keys", str(count), "--shards",
                            str(shards)], capture_output=True, text=True)
    if child.returncode:
        sys.exit(f"{name} failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def report(count: int, shards: int, big: int, results: dict[str, dict[str, Any]]) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    rows = [("stream the output listing (floor)", "list"), (f"summary + index before (main {BASE})", "before"),
            ("summary + index now", "now"), ("summary + index now, one shard at a time", "now-1"),
            (f"summary + index now, {big:,} documents over {big * shards // count:,} shards", "now-big")]
    load = load_average()
    lines = [
        SECTION,
        "",
        f"Made by `/work/shared/heavy .venv/bin/python bench/summary.py --write` (commit {commit}) on "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, Python {platform.python_version()}, load "
        f"average {load} (a shared machine: compare rows of this one run). {count:,} documents over {shards:,} "
        f"shards, 1 in {FAILED_EVERY} with an error record; every shard succeeded (no result read). Each row is its "
        "own process; RSS added = peak RSS - RSS before the measurement (the store's own bytes excluded).",
        "",
        "| measurement | seconds | RSS added MiB | peak RSS MiB | PUTs | summary.json KiB | index.json KiB | "
        "failed items in summary |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, name in rows:
        r = results.get(name)
        if r is None:
            continue
        cells = [f"{r['seconds']:.2f}", f"{max(0.0, r['rss_added_mib']):.0f}", f"{r['rss_peak_mib']:.0f}"]
        cells += [str(r["puts"]), f"{r['summary_kib']:.0f}", f"{r['index_kib']:.0f}",
                  f"{r['failed_in_summary']:,} of {r['failed']:,}"] if "puts" in r else ["—"] * 4
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_section(text: str, path: Path = REPO / "BENCHMARKS.md") -> None:
    """Replace this benchmark's section of BENCHMARKS.md (up to the next `## `), or append it; notes written by
    hand after the table are kept."""
    doc = path.read_text()
    at = doc.find(SECTION)
    if at < 0:
        path.write_text(doc.rstrip("\n") + "\n\n" + text + "\n")
        return
    rest = doc[at + len(SECTION):]
    end = re.search(r"^## ", rest, re.MULTILINE)
    old = rest[:end.start()] if end else rest
    notes = old[old.rfind("|") + 1:].split("\n", 1)[1] if "|" in old else ""  # what follows the table
    path.write_text(doc[:at] + text + "\n" + notes + (rest[end.start():] if end else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=1_000)
    parser.add_argument("--big-keys", type=int, default=10_000_000, help="documents of now-big (0: skip it)")
    parser.add_argument("--only", help="comma-separated measurements (default: all)")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.keys, args.shards)))
        return
    results = {}
    every = ["list", "before", "now", "now-1"] + (["now-big"] if args.big_keys else [])
    names = args.only.split(",") if args.only else every
    for name in names:
        big = name == "now-big"
        keys, shards = (args.big_keys, args.big_keys * args.shards // args.keys) if big else (args.keys, args.shards)
        results[name] = run_child("now" if big else name, keys, shards)
        print(name, results[name], file=sys.stderr, flush=True)
    text = report(args.keys, args.shards, args.big_keys, results)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
