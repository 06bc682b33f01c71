"""Shared pytest setup. Fixture plugins live in tests/support/*_fixtures.py and are listed here."""

from __future__ import annotations

import os

# Nothing in the test suite may reach a model hub (there is none here): PaddleX's check is off.
os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")

pytest_plugins: list[str] = [
    "tests.support.cluster_fixtures",
    "tests.support.s3_fixtures",
    "tests.support.ocr_fixtures",
    "tests.support.operator_fixtures",
]
