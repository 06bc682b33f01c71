"""parse_location / Location / open_storage / S3Settings: pure logic, no I/O beyond the temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference_pod.job.storage import (
    LocalStorage,
    Location,
    S3Settings,
    S3Storage,
    open_storage,
    parse_location,
)


@pytest.mark.parametrize(
    ("uri", "bucket", "path", "canonical"),
    [
        ("s3://bucket", "bucket", "", "s3://bucket"),
        ("s3://bucket/", "bucket", "", "s3://bucket"),
        ("s3://bucket/in", "bucket", "in", "s3://bucket/in"),
        ("s3://bucket/in/", "bucket", "in", "s3://bucket/in"),
        ("  s3://my.bucket-1/a/b/c.png ", "my.bucket-1", "a/b/c.png", "s3://my.bucket-1/a/b/c.png"),
        ("s3://b/with space/%20x", "b", "with space/%20x", "s3://b/with space/%20x"),  # keys are literal
    ],
)
def test_parse_s3(uri: str, bucket: str, path: str, canonical: str) -> None:
    loc = parse_location(uri)
    assert loc == Location("s3", bucket, path)
    assert loc.uri == canonical
    assert parse_location(loc.uri) == loc  # canonical form round-trips


def test_parse_local_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    expected = Location("file", "", str(tmp_path / "data"))
    assert parse_location(str(tmp_path / "data")) == expected
    assert parse_location(f"file://{tmp_path}/data") == expected
    assert parse_location(f"file://localhost{tmp_path}/data") == expected
    assert parse_location("data") == expected  # relative paths become absolute
    assert parse_location("./data/") == expected
    assert parse_location(f"file://{tmp_path}/my%20dir").path == str(tmp_path / "my dir")  # URI-decoded
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_location("~/data") == expected
    assert parse_location(str(tmp_path / "data")).uri == str(tmp_path / "data")


@pytest.mark.parametrize(
    ("uri", "hint"),
    [
        ("", "s3://bucket/prefix"),
        ("   ", "s3://bucket/prefix"),
        ("s3://", "s3://bucket/prefix"),
        ("s3:///prefix", "s3://bucket/prefix"),
        ("s3:/bucket/prefix", "s3://bucket/prefix"),
        ("s3:bucket", "s3://bucket/prefix"),
        ("S3://bucket/prefix", "s3://bucket/prefix"),
        ("gs://x", "s3://bucket/prefix"),
        ("https://bucket.s3.amazonaws.com/prefix", "s3://bucket/prefix"),
        ("s3://bucket/in?versionId=3", "s3://bucket/prefix"),
        ("s3://bucket/in?", "s3://bucket/prefix"),
        ("s3://bucket/in#part", "s3://bucket/prefix"),
        ("s3://key:secret@bucket/in", "OCRJOB_S3_ENDPOINT"),
        ("s3://localhost:9000/in", "OCRJOB_S3_ENDPOINT"),
        ("file://", "file:///abs/path"),
        ("file://otherhost/data", "file:///abs/path"),
    ],
)
def test_parse_rejects_with_a_fix(uri: str, hint: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_location(uri)
    message = str(info.value)
    assert hint in message, message
    if uri.strip():
        assert repr(uri.strip()) in message or uri.strip() in message, "the message names the bad input"


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ("s3://b/in", "s3://b/in", True),
        ("s3://b/in", "s3://b/in/", True),
        ("s3://b/in", "s3://b/in/x/y.png", True),
        ("s3://b/in/", "s3://b/in/x", True),
        ("s3://b/in", "s3://b/input", False),  # prefix boundary: not a string-prefix test
        ("s3://b/in", "s3://b/input2/x", False),
        ("s3://b/in", "s3://b/in-out/x", False),
        ("s3://b/in/x", "s3://b/in", False),  # a parent is not inside its child
        ("s3://b", "s3://b/anything/at/all", True),  # the bucket root contains everything in it
        ("s3://b/", "s3://b", True),
        ("s3://b", "s3://b2/x", False),
        ("s3://b/in", "s3://c/in", False),
    ],
)
def test_contains_s3(outer: str, inner: str, expected: bool) -> None:
    assert parse_location(outer).contains(parse_location(inner)) is expected


def test_contains_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data" / "in"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "data" / "input").mkdir()

    def contains(outer: str | Path, inner: str | Path) -> bool:
        return parse_location(str(outer)).contains(parse_location(str(inner)))

    assert contains(root, root)
    assert contains(root, f"{root}/")
    assert contains(root, root / "sub" / "x.json")  # need not exist yet (an output location)
    assert contains(f"file://{root}", root / "sub")
    assert not contains(root, tmp_path / "data" / "input")  # prefix boundary
    assert not contains(root, tmp_path / "data" / "in-x")
    assert not contains(root / "sub", root)
    assert contains(root, root / "sub" / ".." / "sub")  # normalised before comparing
    assert not contains(root, root / ".." / "input")
    monkeypatch.chdir(tmp_path / "data")
    assert contains("in", root / "sub")  # relative vs absolute
    # A symlink into the tree is resolved: outputs written through it would still land inside.
    (tmp_path / "link").symlink_to(root / "sub")
    assert contains(root, tmp_path / "link" / "out")
    # Across schemes nothing contains anything.
    assert not contains("s3://b/in", root)
    assert not contains(root, "s3://b/in")


def test_join() -> None:
    assert parse_location("s3://b/in").join("x/y.png") == Location("s3", "b", "in/x/y.png")
    assert parse_location("s3://b").join("/x/") == Location("s3", "b", "x")
    assert parse_location("s3://b/in/").join("") == parse_location("s3://b/in")
    assert parse_location("/data/in").join("a/b.json") == Location("file", "", "/data/in/a/b.json")
    outer = parse_location("s3://b/in")
    assert outer.contains(outer.join("deep/er/key"))


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    local = open_storage(str(tmp_path))
    assert isinstance(local, LocalStorage)
    assert Path(local.root) == tmp_path
    s3 = open_storage("s3://bucket/in/", S3Settings(endpoint_url="http://127.0.0.1:1", region="us-east-1"))
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.uri) == ("bucket", "in", "s3://bucket/in")
    assert s3._client.meta.endpoint_url == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_storage("gs://bucket/in")


def test_s3_settings_from_env() -> None:
    assert S3Settings.from_env({}) == S3Settings()
    env = {"AWS_ENDPOINT_URL": "http://generic", "AWS_ENDPOINT_URL_S3": "http://s3-specific",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-central-1"}
    settings = S3Settings.from_env(env)
    assert settings.endpoint_url == "http://s3-specific"
    assert settings.region == "eu-central-1"
    assert settings.path_style is True
    env |= {"OCRJOB_S3_ENDPOINT": "http://ours:8333", "OCRJOB_S3_REGION": "us-west-2",
            "OCRJOB_S3_PATH_STYLE": "false"}
    settings = S3Settings.from_env(env)
    assert (settings.endpoint_url, settings.region, settings.path_style) == ("http://ours:8333", "us-west-2", False)
    assert S3Settings.from_env({"OCRJOB_S3_ENDPOINT": ""}).endpoint_url is None  # empty means unset


def test_s3_settings_default_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCRJOB_S3_ENDPOINT", "http://from-environ:1")
    assert S3Settings.from_env().endpoint_url == os.environ["OCRJOB_S3_ENDPOINT"]


@pytest.mark.parametrize(
    ("uri", "parent", "name"),
    [
        ("s3://b/out/_ocrjob/j/shards/00001.json", "s3://b/out/_ocrjob/j/shards", "00001.json"),
        ("s3://b/top.json", "s3://b", "top.json"),
        ("/data/out/plan.json", "/data/out", "plan.json"),
    ],
)
def test_split_gives_parent_location_and_name(uri: str, parent: str, name: str) -> None:
    got_parent, got_name = parse_location(uri).split()
    assert (got_parent.uri, got_name) == (parent, name)
