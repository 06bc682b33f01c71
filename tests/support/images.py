"""OcrJob's container images, built without a Docker daemon or a registry and cached by content.

``ensure(name)`` returns a ``BuiltImage`` whose OCI archive exists (``ctr images import`` takes it) and whose
reference is in the private buildah store; it builds only when the content key changed. Concurrent callers
are serialised per image name; an archive appears atomically (written aside, then renamed); archives of the
same image beyond its few newest (imagecache.KEEP_PER_NAME) are pruned, and tags whose archive is gone.

    python -m tests.support.images build [NAME...]     # prints "NAME REF ARCHIVE" per image
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import buildah
from tests.support.image_recipes import RECIPES
from tests.support.imagecache import KEY_CHARS, archive_path, content_key, locked, stale_archives, temp_path

REPOSITORY_PREFIX = "localhost/ocrjob-"  # "localhost/": containerd never tries to pull it from Docker Hub
NAMES = tuple(RECIPES)

log = logging.getLogger("ocrjob.images")


class UnknownImageError(KeyError):
    """No recipe has that name."""


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str  # e.g. localhost/ocrjob-operator:<key12>
    archive: Path  # OCI archive; its index names the image `ref`
    key: str = ""  # the full content key


def repository(name: str) -> str:
    return f"{REPOSITORY_PREFIX}{name}"


def _key(name: str, parents: dict[str, BuiltImage]) -> str:
    recipe = RECIPES[name]
    return content_key([("image", name), ("buildah", buildah.version()), *recipe.key_parts(),
                        *((f"parent:{p}", img.key) for p, img in sorted(parents.items()))])


def _in_store(image: BuiltImage) -> None:
    """A child's FROM needs the parent in the store: reload it from its archive if the store lost it."""
    if not buildah.has_image(image.ref):
        buildah.load_archive(image.archive, image.ref)


def _prune(image: BuiltImage) -> None:
    for path in stale_archives(image.name, image.archive):
        path.unlink(missing_ok=True)
    for ref in buildah.images_named(repository(image.name)):
        if not archive_path(image.name, ref.rsplit(":", 1)[1]).exists():  # tags live as long as their archive
            buildah.remove_image(ref)
    buildah.remove_dangling()  # a rebuilt key's earlier image, untagged when the new one took its name


def ensure(name: str) -> BuiltImage:
    """The image `name`, built (with its parents) unless an archive with its current content key exists."""
    if name not in RECIPES:
        raise UnknownImageError(f"no image {name!r}; known: {', '.join(NAMES)}")
    parents = {p: ensure(p) for p in RECIPES[name].parents}
    key = _key(name, parents)
    image = BuiltImage(name, f"{repository(name)}:{key[:KEY_CHARS]}", archive_path(name, key), key)
    with locked(name):
        if image.archive.exists():
            return image
        for parent in parents.values():
            _in_store(parent)
        start = time.monotonic()
        RECIPES[name].build(image.ref, {p: img.ref for p, img in parents.items()})
        built = time.monotonic()
        tmp = temp_path(image.archive)
        try:
            buildah.push_archive(image.ref, tmp)
            os.replace(tmp, image.archive)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("%s: built in %.1fs, archive written in %.1fs (%.1f MB)", name, built - start,
                 time.monotonic() - built, image.archive.stat().st_size / 1e6)
        _prune(image)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.images", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or find cached) images; print NAME REF ARCHIVE for each")
    build.add_argument("names", nargs="*", metavar="NAME", help=f"default: all ({', '.join(NAMES)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    unknown = [n for n in args.names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    for name in args.names or NAMES:
        image = ensure(name)
        print(image.name, image.ref, image.archive, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
