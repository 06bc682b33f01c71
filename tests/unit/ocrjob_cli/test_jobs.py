"""The cluster commands without a cluster: registration, usage errors and exit codes, what people see."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from rich.console import Console
from typer.testing import CliRunner

from inference_pod.job import exit_codes as loader_codes
from ocrjob_cli import jobs
from ocrjob_cli.exit import DESCRIPTIONS, CliError, ExitCode, markdown_table
from ocrjob_cli.flags import SubmitFlags
from ocrjob_cli.jobs import _check_secret, _pick_pods, _split_timestamp, register
from ocrjob_cli.kube import cli_error
from ocrjob_cli.render import human_duration, list_table, results_view, status_view
from ocrjob_operator.api.client import Forbidden
from ocrjob_operator.api.fields import FLAGGED
from ocrjob_operator.api.names import pod_name

COMMANDS = ("submit", "status", "list", "logs", "cancel", "suspend", "resume", "results", "retry")


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def run() -> None:  # the local runner lives beside the cluster commands
        pass

    register(app)
    return app


def invoke(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_all_commands_are_registered(app: typer.Typer) -> None:
    help_text = invoke(app, "--help").stdout
    for command in COMMANDS:
        assert command in help_text


def test_exit_codes_are_distinct_and_apart_from_the_loaders() -> None:
    codes = [int(c) for c in ExitCode]
    assert len(codes) == len(set(codes)) and set(DESCRIPTIONS) == set(ExitCode)
    loader = {v for k, v in vars(loader_codes).items() if k.isupper() and isinstance(v, int)} - {0}
    assert not loader & set(codes)
    assert markdown_table().count("\n") == len(codes) + 1


@pytest.mark.parametrize(("args", "says"), [
    (["submit", "--input", "s3://bkt/in"], "missing --output, --image, --shards or --target-shard-size"),
    (["submit", "-f", "/nonexistent.yaml"], "-f /nonexistent.yaml"),
    (["submit", "--wait", "--timeout", "soon", "-i", "s3://a/b"], "--timeout 'soon' is not a duration"),
    (["submit", "-i", "s3://bkt/in", "-o", "s3://bkt/out", "--image", "i", "--shards", "1", "--set", "x"],
     "PATH=VALUE"),
    (["status", "x", "-o", "xml"], "-o xml: use one of table, json, yaml"),
    (["list", "--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig /nonexistent/kubeconfig: no such file"),
])
def test_usage_errors_exit_2_before_any_cluster_call(app: typer.Typer, args: list[str], says: str) -> None:
    result = invoke(app, *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert says in result.stderr


def test_submit_has_one_option_per_flagged_spec_field(app: typer.Typer) -> None:
    help_text = invoke(app, "submit", "--help").stdout
    for declared in FLAGGED:
        assert declared.option in help_text, declared.path
    for other in ("--file", "--name", "--generate-name", "--label", "--set", "--dry-run", "--wait", "--namespace"):
        assert other in help_text


def test_submit_gathers_the_given_options_into_submit_flags(app: typer.Typer, monkeypatch: Any) -> None:
    seen: list[Any] = []

    def build_job(flags: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(flags)
        raise CliError(ExitCode.USAGE, "stop here")

    monkeypatch.setattr(jobs, "build_job", build_job)
    result = invoke(app, "submit", "-i", "s3://bkt/in", "-o", "s3://bkt/out", "--image", "img:1", "--shards", "2",
                    "--image-pull-secret", "a", "--image-pull-secret", "b", "--request", "cpu=4", "--limit",
                    "memory=1Gi", "--node-selector", "pool=gpu", "--virtual-hosted-style", "--suspend",
                    "--backoff", "30s", "--ttl", "7d", "--max-pixels", "5", "--workers-per-pod", "2", "--device", "cpu",
                    "--det-model-dir", "/m/det", "--pod-cleanup-policy", "Keep")
    assert result.exit_code == ExitCode.USAGE and "stop here" in result.stderr, result.output
    assert seen == [SubmitFlags(
        input="s3://bkt/in", output="s3://bkt/out", image="img:1", shards=2, image_pull_secrets=["a", "b"],
        requests=["cpu=4"], limits=["memory=1Gi"], node_selector=["pool=gpu"], path_style=False, suspend=True,
        backoff="30s", ttl="7d", max_pixels=5, workers_per_pod=2, device="cpu", det_model_dir="/m/det",
        pod_cleanup_policy="Keep")]
    seen.clear()
    invoke(app, "submit", "-i", "s3://bkt/in")
    assert seen == [SubmitFlags(input="s3://bkt/in")]  # nothing else given: suspend and path style stay unset


def test_click_usage_errors_exit_2_too(app: typer.Typer) -> None:
    assert invoke(app, "submit", "--shards", "many").exit_code == ExitCode.USAGE
    assert invoke(app, "status").exit_code == ExitCode.USAGE


def test_an_unreachable_cluster_exits_6(app: typer.Typer, tmp_path: Path) -> None:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
              "users": [{"name": "u", "user": {"token": "t"}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    result = invoke(app, "list", "--kubeconfig", str(tmp_path / "kubeconfig"))
    assert result.exit_code == ExitCode.CLUSTER
    assert "cannot reach context 'c' (https://127.0.0.1:1)" in result.stderr


def pod(shard: int, attempt: int, uid: str = "u") -> dict[str, Any]:
    return {"metadata": {"name": pod_name("j", shard, attempt), "labels": {
        "ocrjob.dev/job-uid": uid, "ocrjob.dev/shard": str(shard), "ocrjob.dev/attempt": str(attempt)}}}


def test_logs_pick_the_latest_attempt_of_each_shard() -> None:
    pods = [pod(1, 0), pod(0, 0), pod(0, 2), pod(0, 1), pod(2, 0, uid="older-job")]
    names = lambda ps: [p["metadata"]["name"] for p in ps]  # noqa: E731
    assert names(_pick_pods(pods, "u", None, None)) == [pod_name("j", 0, 2), pod_name("j", 1, 0)]
    assert names(_pick_pods(pods, "u", 0, None)) == [pod_name("j", 0, 2)]
    assert names(_pick_pods(pods, "u", 0, 1)) == [pod_name("j", 0, 1)]
    assert names(_pick_pods(pods, None, 2, None)) == [pod_name("j", 2, 0)]  # the job is gone: any pod with the name
    assert _pick_pods(pods, "u", 7, None) == []


def test_kubelet_timestamps_order_as_strings() -> None:
    short, _ = _split_timestamp("2026-01-02T03:04:05.1Z a")
    long, text = _split_timestamp("2026-01-02T03:04:05.12Z b c")
    assert short is not None and long is not None and short < long and text == "b c"
    assert _split_timestamp("plain line") == (None, "plain line")


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (119, "119s"), (200, "3m20s"), (240, "4m"),
                                               (1500, "25m"), (5 * 3600 + 600, "5h10m"), (30 * 3600, "30h"),
                                               (2 * 86400 + 4 * 3600, "2d4h"), (40 * 86400, "40d")])
def test_human_durations(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
JOB = {
    "metadata": {"name": "scans", "namespace": "team", "uid": "u", "creationTimestamp": "2026-01-01T11:00:00Z"},
    "spec": {"input": {"uri": "s3://bkt/in", "manifest": "s3://bkt/keys.json"}, "output": {"uri": "s3://bkt/out"}},
    "status": {"phase": "Failed", "message": "1 of 2 shards failed", "progress": "7/10", "shardProgress": "1/2",
               "planLocation": "s3://bkt/out/_ocrjob/u/plan.json", "startTime": "2026-01-01T11:00:00Z",
               "completionTime": "2026-01-01T11:30:00Z",
               "items": {"total": 10, "done": 7, "ok": 6, "failed": 1, "skipped": 0},
               "shards": {"total": 2, "succeeded": 1, "active": 0, "pending": 0, "failed": 1},
               "retries": {"counted": 3, "disruptions": 1, "storage": 0},
               "failedShards": [{"index": 1, "reason": "InvalidInput", "message": "not valid JSON [1]"}],
               "conditions": [{"type": "Failed", "status": "True", "reason": "ShardsFailed",
                               "lastTransitionTime": "2026-01-01T11:30:00Z"}]},
}


def text_of(renderable: Any) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_status_view() -> None:
    events = [{"reason": "ShardFailed", "message": "shard 1 failed for good", "type": "Warning",
               "lastTimestamp": "2026-01-01T11:30:00Z"}]
    retry = {**JOB, "metadata": {**JOB["metadata"], "annotations": {"ocrjob.dev/retry-of": "team/first",
                                                                    "ocrjob.dev/retry-items": "2"}}}
    text = text_of(status_view(retry, events, NOW))
    for expected in ("team/scans", "Failed", "Retry of  team/first (2 documents)", "s3://bkt/in (manifest s3://bkt/keys.json)",
                     "7/10 done: 6 ok, 1 failed, 0 skipped", "1/2 succeeded, 0 running, 0 pending, 1 failed",
                     "3 counted, 1 after disruptions", "(30m)", "InvalidInput", "not valid JSON [1]",
                     "ShardsFailed", "11:30:00 Warning ShardFailed: shard 1 failed for good"):
        assert expected in text, expected


def test_list_table_has_the_printer_columns() -> None:
    text = text_of(list_table([JOB], NOW, all_namespaces=True))
    assert text.split()[:7] == ["NAMESPACE", "NAME", "PHASE", "PROGRESS", "SHARDS", "FAILED", "AGE"]
    assert text.split()[7:] == ["team", "scans", "Failed", "7/10", "1/2", "1", "60m"]


def test_results_view_lists_failed_items_up_to_the_limit() -> None:
    summary = {"job_id": "u", "status": "succeeded", "input": "s3://bkt/in", "output": "s3://bkt/out",
               "items": {"total": 5, "ok": 2, "failed": 3, "skipped": 0, "pending": 0, "pages": 4},
               "error_codes": {"decode_error": 2, "too_large": 1},
               "failed_items": [{"key": f"bad-{i}.png", "code": "decode_error", "message": f"broken [{i}]"}
                                for i in range(3)],
               "shards": [{"index": 0, "status": "succeeded", "items": 5, "seconds": 12.5,
                           "throughput": {"items_per_second": 0.4},
                           "devices": [{"kind": "gpu", "paddle_device": "gpu:0", "name": "NVIDIA H100"}]}]}
    text = text_of(results_view("scans", summary, limit=2))
    for expected in ("5 total: 2 ok, 3 failed", "decode_error: 2, too_large: 1", "gpu:0 NVIDIA H100", "12.5",
                     "0.40", "Failed items (3)", "bad-1.png", "broken [1]", "... and 1 more",
                     "ocrjob retry scans"):
        assert expected in text, expected
    assert "bad-2.png" not in text
    assert "no text found" not in text  # no such pages: nothing said


def test_results_view_names_pages_where_no_text_was_found() -> None:
    summary = {"job_id": "u", "status": "succeeded", "input": "s3://bkt/in", "output": "s3://bkt/out",
               "items": {"total": 2, "ok": 2, "pages": 7, "no_text_pages": 2}}
    text = " ".join(text_of(results_view("scans", summary)).split())
    assert "7 pages, 2 not blank but with no text found (pages flagged no_text_found)" in text


class SecretApi:
    namespace = "team"

    def __init__(self, keys: set[str] | CliError | None) -> None:
        self.keys = keys

    def secret_keys(self, name: str) -> set[str] | None:
        if isinstance(self.keys, CliError):
            raise self.keys
        return self.keys


def test_the_credentials_secret_is_checked_before_the_job_exists() -> None:
    spec = {"s3": {"credentialsSecret": {"name": "s3", "sessionTokenKey": "TOKEN"}}}
    _check_secret(SecretApi({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TOKEN"}), spec)  # type: ignore[arg-type]
    _check_secret(SecretApi(None), {})  # type: ignore[arg-type]  # no Secret named: ambient credentials
    with pytest.raises(CliError) as err:
        _check_secret(SecretApi(None), spec)  # type: ignore[arg-type]
    assert err.value.code is ExitCode.REJECTED
    assert "Secret team/s3 (spec.s3.credentialsSecret.name) does not exist" in err.value.message
    assert "--from-literal=TOKEN=..." in err.value.message
    with pytest.raises(CliError) as err:
        _check_secret(SecretApi({"AWS_ACCESS_KEY_ID", "other"}), spec)  # type: ignore[arg-type]
    assert "lacks key(s) AWS_SECRET_ACCESS_KEY, TOKEN (it has: AWS_ACCESS_KEY_ID, other)" in err.value.message
    forbidden = cli_error(Forbidden(403, "User cannot get secrets"), "reading Secret team/s3")
    _check_secret(SecretApi(forbidden), spec)  # type: ignore[arg-type]  # cannot check: submit anyway
    with pytest.raises(CliError):  # the type decides, not the words
        _check_secret(SecretApi(CliError(ExitCode.CLUSTER, "forbidden")), spec)  # type: ignore[arg-type]
    with pytest.raises(CliError):
        _check_secret(SecretApi(CliError(ExitCode.CLUSTER, "cannot reach", transient=True)), spec)  # type: ignore[arg-type]
