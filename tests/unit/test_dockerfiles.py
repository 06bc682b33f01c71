"""The Dockerfiles under manifests/docker: the CPU and GPU inference images share every step, pins match
pyproject.toml, every image COPYs what `pip install .` needs; and the pure helpers of the image builder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

from tests.support.image_recipes import DOCKERFILES, REPO, apt_mirror, context_files, copy_sources
from tests.support.imagecache import content_key

CPU = DOCKERFILES / "inference-cpu.Dockerfile"
GPU = DOCKERFILES / "inference-gpu.Dockerfile"
OPERATOR = DOCKERFILES / "operator.Dockerfile"
SHARED_FROM = "FROM ${BASE_IMAGE}"


def _arg_defaults(dockerfile: Path) -> dict[str, str]:
    head = dockerfile.read_text().split(SHARED_FROM)[0]
    return dict(line[4:].split("=", 1) for line in head.splitlines() if line.startswith("ARG ") and "=" in line)


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pin(extra: str, package: str) -> str:
    return next(r for r in _pyproject()["project"]["optional-dependencies"][extra] if r.startswith(f"{package}=="))


def test_cpu_and_gpu_images_share_every_step() -> None:
    cpu, gpu = (f.read_text() for f in (CPU, GPU))
    assert cpu.count(SHARED_FROM) == gpu.count(SHARED_FROM) == 1
    assert cpu[cpu.index(SHARED_FROM):] == gpu[gpu.index(SHARED_FROM):]
    assert set(_arg_defaults(CPU)) == set(_arg_defaults(GPU)) == {"BASE_IMAGE", "PADDLE_PACKAGE", "PADDLE_INDEX",
                                                                  "ONNXRUNTIME_PACKAGE"}


def test_inference_defaults() -> None:
    gpu, cpu = _arg_defaults(GPU), _arg_defaults(CPU)
    assert gpu["BASE_IMAGE"].startswith("nvidia/cuda:12.6")
    assert gpu["PADDLE_PACKAGE"] == _pin("gpu", "paddlepaddle-gpu")
    assert gpu["PADDLE_INDEX"].rstrip("/").endswith("/cu126")
    assert cpu["BASE_IMAGE"].startswith("debian:bookworm")
    assert cpu["PADDLE_PACKAGE"] == _pin("cpu", "paddlepaddle")
    assert cpu["PADDLE_INDEX"] == "https://pypi.org/simple"
    assert gpu["ONNXRUNTIME_PACKAGE"] == _pin("gpu", "onnxruntime-gpu")
    assert cpu["ONNXRUNTIME_PACKAGE"] == _pin("cpu", "onnxruntime")


@pytest.mark.parametrize("dockerfile", [CPU, GPU, OPERATOR], ids=lambda p: p.name)
def test_image_copies_every_package_folder(dockerfile: Path) -> None:
    """setuptools refuses `pip install .` when a folder of [tool.setuptools] package-dir is missing."""
    copied = set(copy_sources(dockerfile))
    folders = {d.split("/")[0] for d in _pyproject()["tool"]["setuptools"]["package-dir"].values()}
    assert folders | {"pyproject.toml", "README.md"} <= copied
    assert dockerfile.read_text().count(SHARED_FROM) == 1  # buildable anywhere, base chosen by --build-arg


def test_context_is_only_repository_files() -> None:
    files = context_files(OPERATOR)
    assert "pyproject.toml" in files and "operator/ocrjob_operator/__main__.py" in files
    assert not [f for f in files if "__pycache__" in f or f.startswith(("tests/", ".venv"))]


def test_apt_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n")
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("# x\ndeb [arch=amd64] http://one.example/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://one.example/debian"


def test_content_key_separates_parts() -> None:
    assert content_key([("a", "bc")]) != content_key([("ab", "c")])
    assert content_key([("a", b"x")]) == content_key([("a", "x")])
