"""The cluster commands of `ocrjob`: submit, status, list, logs, cancel, suspend, resume, results, retry.

`ocrjob_cli.local.main` calls `register(app)` when this package is installed. Commands stay thin: cluster
access is in cli_kube, object building in cli_spec, waiting in cli_wait, S3 in cli_results, tables in
cli_render, exit codes in cli_exit. stdout carries what scripts consume (the job name, JSON/YAML, tables);
progress, events, notes and errors go to stderr. kubernetes and boto3 are imported inside the commands,
so `ocrjob run` does not pay for them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from ocrjob_cli.exit import CliError, ExitCode
from ocrjob_cli.flags import SubmitFlags, build_job, parse_duration, parse_job_file, secret_requirements
from ocrjob_cli.options import PANEL_JOB, with_spec_options
from ocrjob_operator.api.client import Forbidden
from ocrjob_operator.api.names import CONTAINER_NAME, LABEL_ATTEMPT, LABEL_JOB_UID, LABEL_SHARD, parse_pod_name
from ocrjob_operator.api.phases import is_finished

if TYPE_CHECKING:
    from ocrjob_cli.kube import OcrJobApi

PANEL = "Cluster (OcrJob on Kubernetes)"
DEFAULT_TIMEOUT = "24h"  # --wait without --timeout still ends: every wait is bounded

def _panel(name: str) -> Any:
    """typer.Option with a help panel: `submit --help` groups its many options."""
    return functools.partial(typer.Option, rich_help_panel=name)


JobOpt = _panel(PANEL_JOB)
AccessOpt, WaitOpt = _panel("Cluster access"), _panel("Waiting (--wait)")

# -- shared options ----------------------------------------------------------------------------------------------
Kubeconfig = Annotated[str | None, AccessOpt("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, then "
                                                "~/.kube/config, then in-cluster).", show_default=False)]
Context = Annotated[str | None, AccessOpt("--context", help="Kubeconfig context (default: the current one).")]
Namespace = Annotated[str | None, AccessOpt("--namespace", "-n", help="Namespace (default: the context's, else "
                                               "'default').")]
Name = Annotated[str, typer.Argument(help="The OcrJob's name.", show_default=False)]
Format = Annotated[str, typer.Option("--output", "-o", help="table, json or yaml.")]
S3Endpoint = Annotated[str | None, typer.Option("--s3-endpoint", help="S3 endpoint for reading results from here "
                                                "(default: OCRJOB_S3_ENDPOINT, then the job's spec.s3.endpoint).")]
S3Region = Annotated[str | None, typer.Option("--s3-region", help="S3 region (default: AWS_REGION, then the job's).")]
Wait = Annotated[bool, WaitOpt("--wait", "-w", help="Wait until the job finishes; the exit code says how.")]
Timeout = Annotated[str, WaitOpt("--timeout", help="With --wait: give up after this long (90s, 15m, 2h); "
                                      "exit 4, the job keeps running.")]
CancelOnTimeout = Annotated[bool, WaitOpt("--cancel-on-timeout", help="With --wait: delete the job when the "
                                               "timeout passes (CI: no GPUs left burning).")]
FailOnItemErrors = Annotated[bool, WaitOpt("--fail-on-item-errors", help="With --wait: exit 9 when the job "
                                                "succeeded but documents have error records.")]
ProgressMode = Annotated[str, WaitOpt("--progress", help="With --wait: auto (a bar on a terminal, lines "
                                           "otherwise), bar, plain, or none.")]


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    # In CI logs and pipes nothing is wrapped at 80 columns: long messages and paths stay greppable.
    return probe if probe.is_terminal else Console(stderr=stderr, width=200, highlight=False)


out = _console(stderr=False)
err = _console(stderr=True)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """A CliError becomes one message on stderr and its exit code."""
    try:
        yield
    except CliError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(int(exc.code)) from None


def _api(kubeconfig: str | None, context: str | None, namespace: str | None) -> OcrJobApi:
    from ocrjob_cli.kube import OcrJobApi, connect

    return OcrJobApi(connect(kubeconfig, context, namespace))


def _print_doc(doc: Any, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))


def _check_format(fmt: str, allowed: tuple[str, ...] = ("table", "json", "yaml")) -> None:
    if fmt not in allowed:
        raise CliError(ExitCode.USAGE, f"-o {fmt}: use one of {', '.join(allowed)}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _check_secret(api: OcrJobApi, spec: dict[str, Any]) -> None:
    """The credentials Secret must exist with its keys before the job does: say its name now, not in an Event."""
    needed = secret_requirements(spec)
    if needed is None:
        return
    name, keys = needed
    ns = api.namespace
    try:
        present = api.secret_keys(name)
    except CliError as exc:
        if isinstance(exc.cause, Forbidden):
            err.print(f"[yellow]note:[/] cannot check Secret {ns}/{name} (no RBAC permission to read it); "
                      "submitting anyway", soft_wrap=True)
            return
        raise
    if present is None:
        literals = " ".join(f"--from-literal={k}=..." for k in keys)
        raise CliError(ExitCode.REJECTED, f"the credentials Secret {ns}/{name} (spec.s3.credentialsSecret.name) does "
                                          f"not exist: create it with `kubectl -n {ns} create secret generic {name} "
                                          f"{literals}`, or name another with --credentials-secret")
    missing = [k for k in keys if k not in present]
    if missing:
        raise CliError(ExitCode.REJECTED, f"the credentials Secret {ns}/{name} lacks key(s) {', '.join(missing)} (it "
                                          f"has: {', '.join(sorted(present)) or 'none'}): add them, or point "
                                          "spec.s3.credentialsSecret.accessKeyIdKey/secretAccessKeyKey at its keys")


def _wait(api: OcrJobApi, job: dict[str, Any], timeout: str, progress: str, cancel_on_timeout: bool,
          fail_on_item_errors: bool) -> ExitCode:
    from ocrjob_cli.render import human_duration
    from ocrjob_cli.wait import PlainRenderer, RichRenderer, Waiter

    seconds = parse_duration(timeout)
    if progress not in ("auto", "bar", "plain", "none"):
        raise CliError(ExitCode.USAGE, f"--progress {progress}: use auto, bar, plain or none")
    name, uid = job["metadata"]["name"], job["metadata"]["uid"]
    if progress == "bar" or (progress == "auto" and err.is_terminal):
        renderer: Any = RichRenderer(err, name)
    else:
        renderer = PlainRenderer(Console(stderr=True, quiet=progress == "none", width=200, highlight=False))
    try:
        result = Waiter(api, renderer).wait(name, uid, seconds)
    except KeyboardInterrupt:
        renderer.close()
        err.print(f"interrupted: ocrjob {name} keeps running; follow it with `ocrjob status {name}` "
                  f"or stop it with `ocrjob cancel {name}`", soft_wrap=True)
        return ExitCode.INTERRUPTED
    renderer.close()
    status = (result.job or {}).get("status") or {}
    took = human_duration(result.waited)
    failed_items = int((status.get("items") or {}).get("failed") or 0)
    if result.code is ExitCode.SUCCEEDED:
        err.print(f"[green]ocrjob {name} Succeeded[/] after {took}: {escape(status.get('message', ''))}",
                  soft_wrap=True)
        if failed_items:
            err.print(f"[yellow]{failed_items} document(s) have error records[/]: `ocrjob results {name}` lists "
                      f"them; `ocrjob retry {name}` runs them again", soft_wrap=True)
            if fail_on_item_errors:
                return ExitCode.ITEM_ERRORS
    elif result.code is ExitCode.FAILED:
        err.print(f"[red]ocrjob {name} Failed[/] after {took}: {escape(status.get('message', ''))}", soft_wrap=True)
        for shard in status.get("failedShards") or []:
            err.print(f"  shard {shard.get('index')}: {escape(str(shard.get('reason')))}: "
                      f"{escape(str(shard.get('message')))}", soft_wrap=True)
        if status.get("failedShards"):
            err.print(f"logs: `ocrjob logs {name} --shard {status['failedShards'][0].get('index')}`", soft_wrap=True)
    elif result.code is ExitCode.TIMEOUT:
        where = f"phase {status.get('phase') or 'Pending'}, {status.get('progress') or '-'} items"
        err.print(f"[red]timed out[/] after {took} waiting for ocrjob {name} ({where})", soft_wrap=True)
        if cancel_on_timeout:
            api.delete_job(name)
            err.print(f"ocrjob {name} deleted (--cancel-on-timeout): its pods stop", soft_wrap=True)
        else:
            err.print(f"it keeps running: `ocrjob status {name}`, or stop it with `ocrjob cancel {name}`",
                      soft_wrap=True)
    else:
        err.print(f"[red]ocrjob {name} was deleted while waiting[/]", soft_wrap=True)
    return result.code


# -- submit ------------------------------------------------------------------------------------------------------
@with_spec_options(after="generate_name")
def submit(
    file: Annotated[str | None, JobOpt("--file", "-f", help="An OcrJob YAML/JSON file ('-': stdin); flags "
                                             "override its values.")] = None,
    name: Annotated[str | None, JobOpt(help="Job name (default: the file's, else generated).")] = None,
    generate_name: Annotated[str | None, JobOpt(help="Name prefix; the apiserver appends 5 random "
                                                      "characters (unique names for CI).")] = None,
    label: Annotated[list[str] | None, JobOpt("--label", "-l", help="KEY=VALUE job label (repeatable).")] = None,
    annotation: Annotated[list[str] | None, JobOpt(help="KEY=VALUE job annotation (repeatable).")] = None,
    set_: Annotated[list[str] | None, JobOpt("--set", help="Any spec field as PATH=YAML, e.g. "
                                                   "tolerations='[{operator: Exists}]' (repeatable).")] = None,
    check_secret: Annotated[bool, JobOpt("--check-secret/--no-check-secret", help="Check that the "
                                               "credentials Secret exists with its keys first.")] = True,
    dry_run: Annotated[bool, JobOpt("--dry-run", help="Let the apiserver validate it, print it, create "
                                          "nothing.")] = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    cancel_on_timeout: CancelOnTimeout = False,
    fail_on_item_errors: FailOnItemErrors = False,
    progress: ProgressMode = "auto",
    namespace: Namespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    *,
    flags: SubmitFlags,
) -> None:
    """Submit an OcrJob from flags or -f FILE; prints its name. With --wait, follow it to the end."""
    with _errors():
        if wait:
            parse_duration(timeout)  # a bad --timeout is a usage error before anything is created
        file_job = None
        if file:
            try:
                text = sys.stdin.read() if file == "-" else Path(file).read_text()
            except OSError as exc:
                raise CliError(ExitCode.USAGE, f"-f {file}: {exc.strerror or exc}") from exc
            parsed = parse_job_file(text, "stdin" if file == "-" else file)
            for other in parsed.ignored:
                err.print(f"note: {escape(other)} in {escape(file)} is not an OcrJob: not applied (kubectl apply it)",
                          soft_wrap=True)
            file_job = parsed.job
        body = build_job(flags, file_job, name=name, generate_name=generate_name, namespace=namespace,
                         labels=label, annotations=annotation, sets=set_)
        api = _api(kubeconfig, context, body["metadata"].get("namespace"))
        body["metadata"]["namespace"] = api.namespace
        api.require_crd()  # before the Secret check: without the CRD nothing else matters
        if check_secret:
            _check_secret(api, body["spec"])
        if dry_run:
            _print_doc(api.create_job(body, dry_run=True), "yaml")
            err.print("valid (server dry run): nothing was created", soft_wrap=True)
            return
        created = api.create_job(body)
        job_name = created["metadata"]["name"]
        sys.stdout.write(job_name + "\n")
        sys.stdout.flush()
        err.print(f"ocrjob {api.namespace}/{job_name} created", soft_wrap=True, highlight=False)
        if wait:
            raise typer.Exit(int(_wait(api, created, timeout, progress, cancel_on_timeout, fail_on_item_errors)))


# -- status, list ------------------------------------------------------------------------------------------------
def status(
    name: Name,
    output: Format = "table",
    events: Annotated[bool, typer.Option("--events/--no-events", help="Show the job's recent Events.")] = True,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None,
) -> None:
    """One job: phase, progress, shards, conditions, failed shards, recent events (-o json for machines)."""
    from ocrjob_cli.render import status_view

    with _errors():
        _check_format(output)
        api = _api(kubeconfig, context, namespace)
        job = api.get_job(name)
        if output != "table":
            _print_doc(job, output)
            return
        found = api.events(job["metadata"]["uid"]) if events else []
        out.print(status_view(job, found, _now()))


def list_(
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")] = False,
    selector: Annotated[str | None, typer.Option("--selector", "-l", help="Label selector, e.g. "
                                                 "ocrjob.dev/retry-of=NAME.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table, json, yaml or name.")] = "table",
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None,
) -> None:
    """OcrJobs with phase, progress, shards, failed items and age (like `kubectl get ocr`)."""
    from ocrjob_cli.render import list_table

    with _errors():
        _check_format(output, ("table", "json", "yaml", "name"))
        api = _api(kubeconfig, context, namespace)
        jobs = api.list_jobs(all_namespaces, selector)
        if output == "name":
            sys.stdout.write("".join(f"{j['metadata']['name']}\n" for j in jobs))
        elif output != "table":
            _print_doc({"apiVersion": "v1", "kind": "List", "items": jobs}, output)
        elif not jobs:
            err.print(f"no OcrJobs in {'any namespace' if all_namespaces else f'namespace {api.namespace}'}")
        else:
            out.print(list_table(jobs, _now(), all_namespaces))


# -- logs --------------------------------------------------------------------------------------------------------
def _pick_pods(pods: list[dict[str, Any]], uid: str | None, shard: int | None,
               attempt: int | None) -> list[dict[str, Any]]:
    """The latest attempt's pod of each shard (or of one shard / one attempt), shard order."""
    latest: dict[int, dict[str, Any]] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if uid and labels.get(LABEL_JOB_UID) not in (None, uid):
            continue  # a pod of an earlier job with the same name
        try:
            index, tries = int(labels.get(LABEL_SHARD, "")), int(labels.get(LABEL_ATTEMPT, ""))
        except ValueError:
            continue
        if (shard is not None and index != shard) or (attempt is not None and tries != attempt):
            continue
        current = latest.get(index)
        if current is None or tries > int(current["metadata"]["labels"][LABEL_ATTEMPT]):
            latest[index] = pod
    return [latest[k] for k in sorted(latest)]


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d) ")


def _split_timestamp(line: str) -> tuple[str | None, str]:
    """('2026-01-02T03:04:05.000001200Z', text) when the kubelet prefixed a timestamp (fraction padded so the
    strings order correctly), else (None, line)."""
    match = _TS.match(line)
    if not match:
        return None, line
    return f"{match.group(1)}.{(match.group(2) or '').ljust(9, '0')}{match.group(3)}", line[match.end():]


def _follow(api: OcrJobApi, pod: str, tail: int | None, timestamps: bool) -> None:
    """Stream one pod's log until its container ends. A quiet stream is re-opened after READ_TIMEOUT (every
    read is bounded); with kubelet timestamps, lines already shown are skipped after re-opening."""
    import urllib3

    read_timeout = 120.0
    last: str | None = None
    first = True
    while True:
        since = None
        if not first and last:
            since = max(1, int((_now() - dt.datetime.fromisoformat(last[:19] + "+00:00")).total_seconds()) + 2)
        resp = api.pod_log(pod, CONTAINER_NAME, tail=tail if first else (None if since else 0), timestamps=True,
                           since_seconds=since, follow=True, read_timeout=read_timeout)
        first = False
        buffer = b""
        try:
            for chunk in resp.stream(1024):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    stamp, text = _split_timestamp(raw.decode(errors="replace"))
                    if stamp and last and stamp <= last:
                        continue
                    last = stamp or last
                    sys.stdout.write((raw.decode(errors="replace") if timestamps else text) + "\n")
                sys.stdout.flush()
            if buffer:
                sys.stdout.write(buffer.decode(errors="replace") + "\n")
            return  # the stream ended: the container exited
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
            parsed = parse_pod_name(pod)
            phase = next((p.get("status", {}).get("phase") for p in api.job_pods(parsed.job if parsed else pod)
                          if p["metadata"]["name"] == pod), None)
            if phase not in ("Pending", "Running"):
                return
        finally:
            resp.release_conn()


def logs(
    name: Name,
    shard: Annotated[int | None, typer.Option("--shard", "-s", help="Only this shard.")] = None,
    attempt: Annotated[int | None, typer.Option(help="That attempt's pod (default: the latest).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new lines (one shard).")] = False,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
    timestamps: Annotated[bool, typer.Option(help="Prefix lines with their time.")] = False,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None,
) -> None:
    """Logs of the job's shard pods (the latest attempt of each shard, or --shard K)."""
    with _errors():
        api = _api(kubeconfig, context, namespace)
        job = api.find_job(name)
        pods = _pick_pods(api.job_pods(name), job["metadata"]["uid"] if job else None, shard, attempt)
        if not pods:
            which = f"shard {shard}" if shard is not None else "any shard"
            policy = ((job or {}).get("spec") or {}).get("podCleanupPolicy", "DeleteSucceeded")
            raise CliError(ExitCode.NOT_FOUND, f"no pod of ocrjob {api.namespace}/{name} for {which}"
                                               f"{'' if attempt is None else f' attempt {attempt}'}: succeeded pods "
                                               f"are deleted when the job finishes (podCleanupPolicy {policy}), and "
                                               f"pods go with the job; the shard summaries are in S3 (`ocrjob "
                                               f"results {name}`)")
        if follow:
            if len(pods) > 1:
                raise CliError(ExitCode.USAGE, f"{len(pods)} shard pods: give --shard K to follow one of them")
            _follow(api, pods[0]["metadata"]["name"], tail, timestamps)
            return
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            if len(pods) > 1:
                err.print(f"==> pod {pod_name} ({pod.get('status', {}).get('phase')}) <==", highlight=False)
            resp = api.pod_log(pod_name, CONTAINER_NAME, tail=tail, timestamps=timestamps)
            sys.stdout.write(resp.data.decode(errors="replace"))
            sys.stdout.flush()


# -- cancel, suspend, resume -------------------------------------------------------------------------------------
def cancel(
    name: Name,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the job is gone.")] = True,
    timeout: Annotated[str, typer.Option(help="How long to wait for it to go.")] = "2m",
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None,
) -> None:
    """Delete the job: its running pods are stopped (they flush what they finished) and removed."""
    with _errors():
        seconds = parse_duration(timeout)
        api = _api(kubeconfig, context, namespace)
        job = api.get_job(name)
        api.delete_job(name)
        err.print(f"ocrjob {api.namespace}/{name} deleted; its pods stop", soft_wrap=True, highlight=False)
        if not wait:
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            current = api.find_job(name)
            if current is None or current["metadata"]["uid"] != job["metadata"]["uid"]:
                return
            time.sleep(1.0)
        raise CliError(ExitCode.TIMEOUT, f"ocrjob {name} still exists after {timeout}: is the operator running? (it "
                                         "removes its finalizer once the pods are stopped)")


def _set_suspend(name: str, value: bool, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    with _errors():
        api = _api(kubeconfig, context, namespace)
        job = api.get_job(name)
        phase = (job.get("status") or {}).get("phase")
        if is_finished(phase):
            err.print(f"ocrjob {name} already {phase}: nothing to {'suspend' if value else 'resume'}")
            return
        api.patch_job(name, {"spec": {"suspend": value}})
        if value:
            err.print(f"ocrjob {name} suspended: no new shard pods; running ones flush and stop. "
                      f"`ocrjob resume {name}` continues where it stopped", soft_wrap=True)
        else:
            err.print(f"ocrjob {name} resumed", soft_wrap=True)


def suspend(name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """Pause a job (spec.suspend=true): finished documents are kept, no retry budget is spent."""
    _set_suspend(name, True, namespace, kubeconfig, context)


def resume(name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """Continue a suspended job (spec.suspend=false)."""
    _set_suspend(name, False, namespace, kubeconfig, context)


# -- results, retry ----------------------------------------------------------------------------------------------
def results(
    name: Name,
    output: Format = "table",
    limit: Annotated[int, typer.Option(help="Failed items shown in the table (0: all).")] = 20,
    download: Annotated[Path | None, typer.Option(help="Download the result objects (and summary) into DIR.",
                                                  metavar="DIR")] = None,
    failed_only: Annotated[bool, typer.Option(help="With --download: only the error records.")] = False,
    s3_endpoint: S3Endpoint = None, s3_region: S3Region = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None,
) -> None:
    """The job summary from S3: counts, shards, failed documents with their errors; --download DIR fetches results."""
    from ocrjob_cli.render import results_view
    from ocrjob_cli.results import JobFiles, download_results, require_summary, s3_settings

    with _errors():
        _check_format(output)
        api = _api(kubeconfig, context, namespace)
        job = api.get_job(name)
        files = JobFiles(job, s3_settings(job.get("spec") or {}, s3_endpoint, s3_region))
        summary = require_summary(files, job)
        if output != "table":
            _print_doc(files.with_failed_items(summary), output)  # every failed document, not the summary's first
        else:
            out.print(results_view(name, files.with_failed_items(summary, None if limit <= 0 else limit)))
        if download is not None:
            count = download_results(files, summary, download, failed_only)
            err.print(f"downloaded {count} result object(s) and the summary to {download}", soft_wrap=True)


def retry(
    name: Name,
    new_name: Annotated[str | None, typer.Option("--name", help="Name of the new job (default: NAME-retry-xxxxx).")
                        ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be retried; change nothing.")] = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    cancel_on_timeout: CancelOnTimeout = False,
    fail_on_item_errors: FailOnItemErrors = False,
    progress: ProgressMode = "auto",
    s3_endpoint: S3Endpoint = None, s3_region: S3Region = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None,
) -> None:
    """A new OcrJob over only the documents of NAME that failed or never finished (its input manifest)."""
    from ocrjob_cli.flags import retry_job, retry_manifest, retry_manifest_uri
    from ocrjob_cli.results import JobFiles, delete_error_records, retry_plan, s3_settings

    with _errors():
        if wait:
            parse_duration(timeout)
        api = _api(kubeconfig, context, namespace)
        job = api.get_job(name)
        files = JobFiles(job, s3_settings(job.get("spec") or {}, s3_endpoint, s3_region))
        plan = retry_plan(files, job)
        if not plan.keys:
            err.print(f"nothing to retry: every document of ocrjob {name} has a result", soft_wrap=True)
            return
        manifest = retry_manifest_uri(files.output_uri, files.uid)
        body = retry_job(job, manifest, len(plan.keys), new_name)
        _check_secret(api, body["spec"])
        api.create_job(body, dry_run=True)  # rejected specs stop here, before anything in S3 changes
        summary = (f"{len(plan.keys)} document(s) of {name}: {len(plan.error_records)} with an error record, "
                   f"{len(plan.keys) - len(plan.error_records)} without a result")
        if dry_run:
            sys.stdout.write("".join(f"{k}\n" for k in plan.keys))
            err.print(f"would retry {summary} (dry run: nothing changed)", soft_wrap=True)
            return
        files.put(manifest, retry_manifest(plan.keys, job))
        # The loader skips documents that already have a result object: the error records must go first.
        delete_error_records(files, plan.error_records)
        created = api.create_job(body)
        job_name = created["metadata"]["name"]
        sys.stdout.write(job_name + "\n")
        sys.stdout.flush()
        err.print(f"ocrjob {api.namespace}/{job_name} created: retries {summary} (input manifest {manifest})",
                  soft_wrap=True, highlight=False)
        if wait:
            raise typer.Exit(int(_wait(api, created, timeout, progress, cancel_on_timeout, fail_on_item_errors)))


def register(app: typer.Typer) -> None:
    """Add the cluster commands to the `ocrjob` app."""
    for command, fn in (("submit", submit), ("status", status), ("list", list_), ("logs", logs), ("cancel", cancel),
                        ("suspend", suspend), ("resume", resume), ("results", results), ("retry", retry)):
        app.command(command, rich_help_panel=PANEL)(fn)
