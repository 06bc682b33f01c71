"""buildah with OcrJob's private image storage: no Docker daemon, no registry, nothing of the host's own store.

Storage (root, runroot) lives under ``<cache>/images/storage``; the driver is overlay where the kernel
allows it here, else vfs. Every working container is removed again, also when a step fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.support.imagecache import images_dir

_TIMEOUT_S = 3600.0  # one buildah step (a cold `pip install` of Paddle is the longest)
# Never ask a registry: images come only from this store or an archive.
_NO_REGISTRY = "--pull-never"


class BuildahError(RuntimeError):
    """A buildah command failed; `stderr` holds its tail."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv[:4])} ... exited {returncode}: {stderr[-4000:]}")
        self.returncode = returncode
        self.stderr = stderr


def storage_dir() -> Path:
    return images_dir() / "storage"


@functools.cache
def _driver() -> str:
    """overlay when a probe mount works on this storage's filesystem, else vfs (overlay-on-overlay fails)."""
    probe = storage_dir() / "probe"
    dirs = {d: probe / d for d in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    ok = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(dirs["merged"])],
                        capture_output=True, check=False).returncode == 0
    if ok:
        subprocess.run(["umount", str(dirs["merged"])], check=True, capture_output=True)
    subprocess.run(["rm", "-rf", str(probe)], check=True)
    return "overlay" if ok else "vfs"


def _global_args() -> list[str]:
    return ["buildah", "--root", str(storage_dir() / "root"), "--runroot", str(storage_dir() / "run"),
            "--storage-driver", _driver()]


def run(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run one buildah command against the private store; its stdout, stripped."""
    argv = [*_global_args(), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=_TIMEOUT_S,
                          env=dict(env) if env is not None else None)
    if proc.returncode != 0:
        raise BuildahError(argv, proc.returncode, proc.stderr)
    return proc.stdout.strip()


def version() -> str:
    return subprocess.run(["buildah", "--version"], capture_output=True, text=True, check=True).stdout.strip()


@contextlib.contextmanager
def working_container(image: str = "scratch") -> Iterator[str]:
    """`buildah from image`; the container is removed on exit, whatever happened."""
    ctr = run("from", _NO_REGISTRY, image).splitlines()[-1]
    try:
        yield ctr
    finally:
        run("rm", ctr)


def has_image(ref: str) -> bool:
    try:
        run("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
    except BuildahError:
        return False
    return True


def load_archive(archive: Path, ref: str) -> None:
    """Put an image back into the store from its OCI archive (a store wiped while the cache was kept)."""
    image_id = run("pull", "--quiet", f"oci-archive:{archive}").splitlines()[-1]
    run("tag", image_id, ref)


def push_archive(ref: str, dest: Path) -> None:
    """Write `ref` as an OCI archive whose index names it `ref` (what `ctr images import` uses)."""
    dest.unlink(missing_ok=True)
    run("push", "--quiet", ref, f"oci-archive:{dest}:{ref}")


def remove_image(ref: str) -> None:
    with contextlib.suppress(BuildahError):
        run("rmi", ref)


def remove_dangling() -> None:
    with contextlib.suppress(BuildahError):
        run("rmi", "--prune")


def images_named(repository: str) -> list[str]:
    """Every tag of `repository` in the store, as full references."""
    listed = json.loads(run("images", "--json") or "null") or []  # "null" when the store is empty
    return [n for image in listed for n in image.get("names") or [] if n.rsplit(":", 1)[0] == repository]


def bud(dockerfile: Path, context: Path, ref: str, build_args: Mapping[str, str],
        volumes: Sequence[str] = ()) -> None:
    """`buildah bud` with chroot isolation (no nested namespaces needed) from images in this store only;
    --force-rm: intermediate containers go also when a step fails (buildah allows it only with --no-cache:
    the layer cache is unused anyway, the archive cache is above it)."""
    args = ["bud", "--isolation", "chroot", _NO_REGISTRY, "--no-cache", "--force-rm", "--quiet",
            "-f", str(dockerfile), "-t", ref]
    for k, v in build_args.items():
        args += ["--build-arg", f"{k}={v}"]
    for v in volumes:
        args += ["-v", v]
    run(*args, str(context))
