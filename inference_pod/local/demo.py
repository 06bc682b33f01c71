"""`ocrjob demo` (what `make demo` runs): sample documents → `ocrjob run` → the recognised text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from inference_pod.job import layout
from inference_pod.local.runner import run_local
from inference_pod.local.samples import generate_samples
from inference_pod.models import default_model_source
from inference_pod.shard.config import LoaderConfig


def run_demo(workdir: Path, devices: str, console: Console) -> int:
    workdir = workdir.absolute()
    input_dir, output_dir = workdir / "input", workdir / "output"
    # A fresh run every time: the demo shows OCR, not resume.
    for path in (input_dir, output_dir):
        shutil.rmtree(path, ignore_errors=True)
    expected = generate_samples(input_dir)
    console.print(f"generated {len(expected)} sample documents in {input_dir}: {', '.join(sorted(expected))}")
    config = LoaderConfig(manifest="", models=default_model_source(), termination_log=None)
    result = run_local(str(input_dir), str(output_dir), devices, config, console=console)
    out = Console()
    for name in sorted(expected):
        record = json.loads((output_dir / layout.result_key(name)).read_text())
        if record["status"] == "ok":
            pages = record["pages"]
            body = "\n\n".join(f"[dim]page {p['page']}[/]\n{p['text']}" for p in pages) or "[dim](no text)"
            out.print(Panel(body, title=f"{name} ({record['format']}, {len(pages)} page(s))", expand=False))
        else:
            error = record["error"]
            body = f"[red]{error['code']}[/]: {error['message']}"
            out.print(Panel(body, title=f"{name} (error record)", expand=False))
    console.print(f"results: {output_dir} (one <name>.json per document; job files under {layout.JOB_DIR}/)")
    # The corrupt sample's error record is expected: the job still succeeds.
    return result.exit_code
