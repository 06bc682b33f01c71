"""The CRD: generated from the operator's bounds, checked in up to date, documented on every field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ocrjob_operator.api import fields as F
from ocrjob_operator.api import spec as S
from ocrjob_operator.api.crd import build_crd, render
from ocrjob_operator.api.names import GROUP, KIND, SHORT_NAMES, VERSION
from ocrjob_operator.api.phases import ConditionType, Phase

REPO = Path(__file__).resolve().parents[4]


def _schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def test_checked_in_crd_is_generated_from_the_code() -> None:
    on_disk = (REPO / "crds" / "ocrjob.yaml").read_text()
    assert on_disk == render(), "crds/ocrjob.yaml is stale: run `python -m ocrjob_operator.api.crd > crds/ocrjob.yaml`"


def test_names_scope_subresource_and_columns() -> None:
    crd = build_crd()
    assert crd["spec"]["group"] == GROUP and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == KIND and crd["spec"]["names"]["shortNames"] == list(SHORT_NAMES)
    version = crd["spec"]["versions"][0]
    assert version["name"] == VERSION and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Progress", "Shards", "Failed", "Age"]


def test_every_field_has_a_description_and_a_structural_type() -> None:
    for path, node in _walk(_schema()):
        if path == ".metadata":  # the apiserver forbids anything but a type here; it documents metadata itself
            continue
        assert node.get("description"), f"{path or '<root>'} has no description (kubectl explain shows nothing)"
        typed = node.get("type") or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields")
        assert typed, f"{path} has no type: the schema would not be structural"


def test_every_cel_rule_says_how_to_fix_it() -> None:
    rules = [(p, r) for p, n in _walk(_schema()) for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 8
    for path, rule in rules:
        assert rule.get("message") and len(rule["message"]) > 30, f"{path}: {rule}"


def test_every_integer_has_bounds_and_they_match_the_operator() -> None:
    spec = _schema()["properties"]["spec"]
    for path, (low, high, default) in S.BOUNDS.items():
        node = spec
        for part in path.split("."):
            node = node["properties"][part]
        assert (node["minimum"], node["maximum"], node.get("default")) == (low, high, default), path
    for path, node in _walk(spec):
        if node.get("type") == "integer":
            assert "minimum" in node and "maximum" in node, f"{path} is unbounded"


def test_table_fields_carry_the_tables_description() -> None:
    spec = _schema()["properties"]["spec"]
    for declared in F.FIELDS:
        if declared.type in (int, bool) or declared.choices:
            node = spec
            for part in declared.path.split("."):
                node = node["properties"][part]
            assert node["description"] == declared.description, declared.path


def test_status_phases_are_the_enums() -> None:
    status = _schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == Phase.values() and status["phase"]["description"] == f"{Phase.listing()}."
    assert ConditionType.listing() in status["conditions"]["items"]["description"]


def test_spec_requires_the_essentials() -> None:
    spec = _schema()["properties"]["spec"]
    assert set(spec["required"]) == {"input", "output", "image", "sharding"}
    assert {f.path.split(".")[0] for f in F.FIELDS if f.required} <= set(spec["required"])
    status = _schema()["properties"]["status"]["properties"]
    for field in ("phase", "conditions", "observedGeneration", "planLocation", "summaryLocation", "startTime",
                  "completionTime", "shards", "items", "progress", "shardProgress", "message"):
        assert field in status


def test_crd_yaml_parses_as_one_document() -> None:
    docs = list(yaml.safe_load_all((REPO / "crds" / "ocrjob.yaml").read_text()))
    assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition"
