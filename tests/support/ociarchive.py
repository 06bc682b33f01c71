"""Reading an OCI image archive as a runtime would: check it, then unpack its layers into a root filesystem.

Checks what `ctr images import` relies on (oci-layout, index.json naming the image, every blob present
with the digest it is addressed by) and applies layers in order with OCI whiteouts. Uses no buildah.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

REF_NAME = "org.opencontainers.image.ref.name"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip")


class ArchiveError(ValueError):
    """The archive is not a valid single-image OCI archive."""


@dataclass(frozen=True)
class OciImage:
    """A checked, extracted OCI layout: its reference, image config and layer blobs in order."""

    layout: Path
    ref: str
    config: dict[str, Any]
    layers: tuple[Path, ...]

    @property
    def process(self) -> dict[str, Any]:
        return self.config.get("config") or {}


def _blob(layout: Path, descriptor: dict[str, Any]) -> Path:
    algo, _, hexdigest = descriptor["digest"].partition(":")
    path = layout / "blobs" / algo / hexdigest
    if not path.is_file():
        raise ArchiveError(f"blob {descriptor['digest']} is missing")
    if path.stat().st_size != descriptor["size"]:
        raise ArchiveError(f"blob {descriptor['digest']} has {path.stat().st_size} bytes, not {descriptor['size']}")
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != hexdigest:
        raise ArchiveError(f"blob {descriptor['digest']} does not match its digest")
    return path


def open_archive(archive: Path, into: Path) -> OciImage:
    """Extract `archive` into the folder `into` and check every blob of its one image."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    if json.loads((into / "oci-layout").read_text()).get("imageLayoutVersion") != "1.0.0":
        raise ArchiveError("oci-layout is not version 1.0.0")
    manifests = json.loads((into / "index.json").read_text())["manifests"]
    if len(manifests) != 1:
        raise ArchiveError(f"index.json lists {len(manifests)} manifests, expected one")
    ref = (manifests[0].get("annotations") or {}).get(REF_NAME, "")
    manifest = json.loads(_blob(into, manifests[0]).read_text())
    config = json.loads(_blob(into, manifest["config"]).read_text())
    layers = []
    for layer in manifest["layers"]:
        if layer["mediaType"] not in _LAYER_TYPES:
            raise ArchiveError(f"layer media type {layer['mediaType']} is not handled")
        layers.append(_blob(into, layer))
    if len(config.get("rootfs", {}).get("diff_ids", [])) != len(layers):
        raise ArchiveError("the config's rootfs.diff_ids do not match the manifest's layers")
    return OciImage(into, ref, config, tuple(layers))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _apply_whiteouts(layer: Path, rootfs: Path) -> None:
    """Whiteouts hide what lower layers put there: applied before this layer's own files land."""
    listed = subprocess.run(["tar", "-tf", str(layer)], capture_output=True, text=True, check=True).stdout
    for name in listed.splitlines():
        member = PurePosixPath(name.removeprefix("./"))
        if not member.name.startswith(_WHITEOUT) or ".." in member.parts:
            continue
        parent = rootfs / member.parent
        if member.name == _OPAQUE:
            if parent.is_dir():
                for child in parent.iterdir():
                    _remove(child)
        else:
            _remove(parent / member.name[len(_WHITEOUT):])


def unpack(image: OciImage, rootfs: Path) -> Path:
    """The image's root filesystem in `rootfs` (owners, modes and links as in the layers; needs root)."""
    rootfs.mkdir(parents=True, exist_ok=True)
    for layer in image.layers:
        _apply_whiteouts(layer, rootfs)
        subprocess.run(["tar", "-xf", str(layer), "-C", str(rootfs), "--numeric-owner", "--same-permissions",
                        "--same-owner", "--xattrs", "--exclude=.wh.*", "--exclude=./.wh.*", "--exclude=*/.wh.*"],
                       check=True, capture_output=True)
    return rootfs
