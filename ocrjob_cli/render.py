"""What `ocrjob status`, `list` and `results` print for people (rich tables) — pure: objects in, renderables out."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from inference_pod.job.shard_records import no_text_note
from ocrjob_cli.flags import ANNOTATION_RETRY_ITEMS, ANNOTATION_RETRY_OF
from ocrjob_cli.wait import event_order, format_event
from ocrjob_operator.api.phases import Phase

PHASE_STYLE = {Phase.SUCCEEDED: "green", Phase.FAILED: "red", Phase.RUNNING: "cyan", Phase.SUSPENDED: "yellow",
               Phase.PLANNING: "blue", Phase.PENDING: "dim"}


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's short durations: 45s, 3m20s, 25m, 5h10m, 2d4h, 40d."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if days < 2:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def age(timestamp: str | None, now: dt.datetime) -> str:
    when = parse_time(timestamp)
    return human_duration((now - when).total_seconds()) if when else "<unknown>"


def phase_text(phase: str | None) -> Text:
    phase = phase or Phase.PENDING.value
    return Text(phase, style=PHASE_STYLE.get(phase, ""))


def list_table(jobs: list[dict[str, Any]], now: dt.datetime, all_namespaces: bool = False) -> Table:
    """The CRD's printer columns (what `kubectl get ocr` shows), plus the namespace with -A."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "PHASE", "PROGRESS", "SHARDS", "FAILED", "AGE"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for job in sorted(jobs, key=lambda j: (j["metadata"].get("namespace", ""), j["metadata"]["name"])):
        meta, status = job["metadata"], job.get("status") or {}
        row: list[RenderableType] = [meta.get("namespace", "")] if all_namespaces else []
        row += [meta["name"], phase_text(status.get("phase")), status.get("progress") or "",
                status.get("shardProgress") or "", str((status.get("items") or {}).get("failed", "")),
                age(meta.get("creationTimestamp"), now)]
        table.add_row(*row)
    return table


def _duration(status: dict[str, Any], now: dt.datetime) -> str:
    start = parse_time(status.get("startTime"))
    if not start:
        return ""
    end = parse_time(status.get("completionTime")) or now
    return human_duration((end - start).total_seconds())


def status_view(job: dict[str, Any], events: list[dict[str, Any]], now: dt.datetime,
                max_events: int = 10) -> RenderableType:
    meta, spec, status = job["metadata"], job.get("spec") or {}, job.get("status") or {}
    items, shards, retries = status.get("items") or {}, status.get("shards") or {}, status.get("retries") or {}
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    rows: list[tuple[str, RenderableType]] = [
        ("Name", f"{meta.get('namespace')}/{meta['name']}"),
        ("Phase", phase_text(status.get("phase"))),
        ("Message", escape(status.get("message") or "")),
        ("Input", escape(((spec.get("input") or {}).get("uri") or "")
                         + (f" (manifest {spec['input']['manifest']})" if (spec.get("input") or {}).get("manifest")
                            else ""))),
        ("Output", escape((spec.get("output") or {}).get("uri") or "")),
    ]
    retry_of = (meta.get("annotations") or {}).get(ANNOTATION_RETRY_OF)
    if retry_of:
        rows.append(("Retry of", f"{retry_of} ({(meta.get('annotations') or {}).get(ANNOTATION_RETRY_ITEMS, '?')} "
                                 "documents)"))
    if "total" in items:
        rows += [
            ("Items", f"{items.get('done', 0)}/{items.get('total', 0)} done: {items.get('ok', 0)} ok, "
                      f"{items.get('failed', 0)} failed, {items.get('skipped', 0)} skipped"),
            ("Shards", f"{shards.get('succeeded', 0)}/{shards.get('total', 0)} succeeded, {shards.get('active', 0)} "
                       f"running, {shards.get('pending', 0)} pending, {shards.get('failed', 0)} failed"),
            ("Retries", f"{retries.get('counted', 0)} counted, {retries.get('disruptions', 0)} after disruptions, "
                        f"{retries.get('storage', 0)} after storage outages"),
        ]
    if spec.get("suspend"):
        rows.append(("Suspended", "yes (ocrjob resume to continue)"))
    if status.get("startTime"):
        rows.append(("Started", f"{status['startTime']} ({_duration(status, now)}"
                                f"{'' if status.get('completionTime') else ' so far'})"))
    if status.get("completionTime"):
        rows.append(("Finished", status["completionTime"]))
    for key, label in (("planLocation", "Plan"), ("summaryLocation", "Summary")):
        if status.get(key):
            rows.append((label, escape(status[key])))
    for label, value in rows:
        facts.add_row(label, value)
    parts: list[RenderableType] = [facts]
    if status.get("failedShards"):
        failed = Table("SHARD", "REASON", "MESSAGE", box=None, pad_edge=False, header_style="bold red",
                       title="Failed shards", title_justify="left")
        for shard in status["failedShards"]:
            failed.add_row(str(shard.get("index")), escape(shard.get("reason") or ""),
                           escape(shard.get("message") or ""))
        parts += [Text(""), failed]
    if status.get("conditions"):
        conds = Table("CONDITION", "STATUS", "REASON", "SINCE", box=None, pad_edge=False, header_style="bold")
        for c in status["conditions"]:
            conds.add_row(c.get("type", ""), c.get("status", ""), c.get("reason", ""),
                          age(c.get("lastTransitionTime"), now))
        parts += [Text(""), conds]
    if events:
        parts += [Text(""), Text(f"Events (last {min(len(events), max_events)}):", style="bold")]
        recent = sorted(events, key=event_order)[-max_events:]
        parts += [Text(format_event(e), style="yellow" if e.get("type") == "Warning" else "") for e in recent]
    return Group(*parts)


def _device(report: Any) -> str:
    """A loader DeviceReport as one word or two: 'cpu', 'gpu:0 NVIDIA H100 80GB HBM3'."""
    if not isinstance(report, dict):
        return str(report)
    name = report.get("paddle_device") or report.get("kind") or "?"
    return f"{name} {report['name']}" if report.get("name") else name


def results_view(name: str, summary: dict[str, Any], limit: int | None = 20) -> RenderableType:
    """The job summary as a table; its `failed_items` shown up to `limit`, counted from `failed_items_total` (the
    caller puts the failed documents to show there: `JobFiles.with_failed_items`)."""
    items = summary.get("items") or {}
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    state = summary.get("status") or "?"
    head.add_row("Job", f"{name} ({summary.get('job_id')})")
    head.add_row("Status", Text(state, style={"succeeded": "green", "failed": "red"}.get(state, "yellow")))
    if summary.get("message"):
        head.add_row("Message", escape(summary["message"]))
    head.add_row("Input", escape(summary.get("input") or ""))
    head.add_row("Output", escape(summary.get("output") or ""))
    if items:
        head.add_row("Items", f"{items.get('total', 0)} total: {items.get('ok', 0)} ok, {items.get('failed', 0)} "
                              f"failed, {items.get('skipped', 0)} skipped, {items.get('pending', 0)} pending; "
                              f"{items.get('pages', 0)} pages{no_text_note(items)}")
    if summary.get("error_codes"):
        head.add_row("Errors", ", ".join(f"{code}: {n}" for code, n in sorted(summary["error_codes"].items())))
    parts: list[RenderableType] = [head]
    if summary.get("shards"):
        shards = Table("SHARD", "STATUS", "ITEMS", "SECONDS", "ITEMS/S", "DEVICES", "ATTEMPT", box=None,
                       pad_edge=False, header_style="bold")
        for s in summary["shards"]:
            throughput = (s.get("throughput") or {}).get("items_per_second")
            devices = ", ".join(_device(d) for d in s.get("devices") or [])
            shards.add_row(str(s.get("index")), s.get("status") or "", str(s.get("items", "")),
                           "" if s.get("seconds") is None else f"{s['seconds']:.1f}",
                           "" if throughput is None else f"{throughput:.2f}", escape(devices),
                           str(s.get("attempt") or ""))
        parts += [Text(""), shards]
    failed = summary.get("failed_items") or []
    total = summary.get("failed_items_total", len(failed))
    if total:
        shown = failed if limit is None else failed[:limit]
        table = Table("KEY", "CODE", "MESSAGE", box=None, pad_edge=False, header_style="bold red",
                      title=f"Failed items ({total})", title_justify="left")
        for item in shown:
            table.add_row(escape(item.get("key", "")), item.get("code", ""), escape(item.get("message", "")))
        parts += [Text(""), table]
        if len(shown) < total:
            parts.append(Text(f"... and {total - len(shown)} more (--limit 0 shows all, -o json for machines)"))
        parts.append(Text(f"Re-run them with: ocrjob retry {name}", style="bold"))
    return Group(*parts)
