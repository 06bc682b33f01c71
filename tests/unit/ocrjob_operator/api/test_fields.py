"""The spec field table: every loader setting an OcrJob can set is one field, with the settings table's type,
bounds, default and help, and it reaches the CRD, `parse_spec`, the shard pod's environment and `ocrjob submit`."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from inference_pod.job import settings
from ocrjob_cli.flags import SubmitFlags
from ocrjob_operator.api import fields as F
from ocrjob_operator.api.crd import build_crd
from ocrjob_operator.api.spec import BOUNDS, parse_spec
from ocrjob_operator.podspec import JobRef, build_pod

PER_JOB = [s for s in settings.SETTINGS if s.spec]
BASE: dict[str, Any] = {"input": {"uri": "s3://bucket/scans"}, "output": {"uri": "s3://bucket/results"},
                        "image": "reg/ocr:1", "sharding": {"shardCount": 4}}


def _crd_node(path: str) -> dict[str, Any]:
    node = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in path.split("."):
        node = node["properties"][part]
    return node


def test_paths_flags_and_attributes_are_unique() -> None:
    assert len(F.BY_PATH) == len(F.FIELDS)
    flags = [f.option for f in F.FLAGGED] + [f.short for f in F.FLAGGED if f.short]
    assert len(flags) == len(set(flags))
    assert len({f.name for f in F.FLAGGED}) == len(F.FLAGGED)


@pytest.mark.parametrize("setting", PER_JOB, ids=lambda s: s.name)
def test_a_per_job_setting_is_a_field_declared_by_the_settings_table(setting: settings.Setting) -> None:
    declared = F.BY_PATH[setting.spec]  # type: ignore[index]
    assert declared.setting == setting.name and declared.type is setting.type
    assert declared.default == setting.default
    assert (declared.low, declared.high) == (setting.low, setting.high)
    assert declared.help == setting.help or declared.flag_help is not None  # device: the CRD says gpu or cpu


@pytest.mark.parametrize("setting", [s for s in PER_JOB if s.low is not None], ids=lambda s: s.name)
def test_a_bounded_setting_has_the_tables_bounds_and_default_in_the_crd_and_parse_spec(
        setting: settings.Setting) -> None:
    node = _crd_node(setting.spec)  # type: ignore[arg-type]
    assert (node["minimum"], node["maximum"], node["default"]) == (setting.low, setting.high, setting.default)
    assert node["description"].startswith(setting.help)
    assert BOUNDS[setting.spec] == (setting.low, setting.high, setting.default)  # type: ignore[index]


def test_the_lower_bounds_the_settings_table_sets() -> None:
    # The settings table is the authority; the CRD used to say 10000 and 1024 here.
    assert _crd_node("ocr.maxPixels")["minimum"] == settings.bounds("max_pixels")[0] == 1
    assert _crd_node("ocr.maxItemBytes")["minimum"] == settings.bounds("max_item_bytes")[0] == 1
    parse_spec({**BASE, "ocr": {"maxPixels": 1, "maxItemBytes": 1}})


def test_every_per_job_setting_reaches_the_pod_environment() -> None:
    values = {"workersPerPod": 3, "device": "cpu", "ocr": {"engine": "paddle", "pageBatchSize": 7, "recBatchSize": 9,
                                                          "detLimitSideLen": 640, "detInput": settings.DET_INPUT_PLAIN,
                                                          "maxPixels": 5, "maxPages": 6,
                                                          "maxItemBytes": 2048, "pdfDpi": 72},
              "models": {"detection": {"name": "d", "location": "/m/det"},
                         "recognition": {"name": "r", "location": "s3://models/rec"}}}
    spec = parse_spec({**BASE, **values})
    pod = build_pod(JobRef("j", "ns", "u"), spec, 0, 0, "s3://bucket/results/m.json")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    for setting in PER_JOB:
        node: Any = values
        for part in setting.spec.split("."):  # type: ignore[union-attr]
            node = node[part]
        assert env[setting.env] == str(node), setting.name
    assert env[settings.BY_NAME["grace_seconds"].env] == settings.environment(
        {"grace_seconds": settings.default("grace_seconds")})[settings.BY_NAME["grace_seconds"].env]


@pytest.mark.parametrize("setting", PER_JOB, ids=lambda s: s.name)
def test_every_per_job_setting_is_a_submit_flag(setting: settings.Setting) -> None:
    declared = F.BY_PATH[setting.spec]  # type: ignore[index]
    by_path = {f.metadata["path"]: f for f in dataclasses.fields(SubmitFlags)}
    assert by_path[setting.spec].metadata["flag"] == declared.option  # type: ignore[index]
    if setting.name != "workers_per_device":  # the pod's workers share its one device: --workers-per-pod
        assert declared.option == setting.flag


def test_choices_and_booleans_are_the_crds() -> None:
    for declared in F.FIELDS:
        if declared.choices:
            node = _crd_node(declared.path)
            assert node["enum"] == list(declared.choices) and node.get("default") == declared.default
        if declared.type is bool:
            assert _crd_node(declared.path)["default"] is declared.default


def test_descriptions_carry_bounds_and_defaults() -> None:
    assert F.BY_PATH["parallelism"].description == "Most shard pods running at once. Between 1 and 1000. Default 1."
    assert F.BY_PATH["s3.pathStyle"].description.endswith(" Default true.")
    assert "Default" not in F.BY_PATH["podCleanupPolicy"].description  # its help already names the default
