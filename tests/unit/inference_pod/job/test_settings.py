"""The loader settings table: bounds and types are enforced, the pod env round-trips, the README is current."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_pod.job import settings

REPO = Path(__file__).resolve().parents[4]


def test_readme_lists_the_loader_settings_from_the_table() -> None:
    assert settings.markdown_table() in (REPO / "README.md").read_text(), (
        "README's loader options table is stale: paste the output of "
        "`python -c 'from inference_pod.job.settings import markdown_table; print(markdown_table())'`")


def test_flags_and_env_are_derived_from_the_name() -> None:
    setting = settings.BY_NAME["page_batch_size"]
    assert (setting.flag, setting.env) == ("--page-batch-size", "OCRJOB_PAGE_BATCH_SIZE")


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("page_batch_size", 0, "between 1 and 256"), ("page_batch_size", "four", "must be an integer"),
    ("pdf_dpi", 601, "between 36 and 600"), ("workers_per_device", 1.5, "whole number"),
    ("grace_seconds", -1, "between 0 and 3600"),
])
def test_bad_values_name_the_setting_its_flag_env_and_range(name: str, value: object, fragment: str) -> None:
    with pytest.raises(settings.SettingError, match=fragment) as info:
        settings.BY_NAME[name].check(value)
    setting = settings.BY_NAME[name]
    assert name in str(info.value) and setting.flag in str(info.value) and setting.env in str(info.value)


def test_environment_strings_parse_back_to_the_same_values() -> None:
    values = {"page_batch_size": 8, "grace_seconds": 25.0, "device": "gpu", "det_model_name": None}
    env = settings.environment(values)
    assert env == {"OCRJOB_PAGE_BATCH_SIZE": "8", "OCRJOB_GRACE_SECONDS": "25", "OCRJOB_DEVICE": "gpu"}
    back = {s.name: s.check(env[s.env]) for s in settings.SETTINGS if s.env in env}
    assert back == {k: v for k, v in values.items() if v is not None}


def test_config_from_settings_takes_table_defaults_and_refuses_half_a_model_pair() -> None:
    from inference_pod.shard.config import config_from_settings

    config = config_from_settings({"manifest": "m.json", "device": "cpu"})
    assert config.page_batch_size == settings.default("page_batch_size")
    assert config.limits.max_pixels == settings.default("max_pixels")
    with pytest.raises(ValueError, match="give all four"):
        config_from_settings({"manifest": "m.json", "det_model_name": "x"})
