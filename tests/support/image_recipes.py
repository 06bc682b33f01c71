"""How each of OcrJob's container images is made, and what its content key covers.

A recipe names its parent images, lists the parts its key is computed from (every input: sources, build
arguments, tool versions, the recipe's own code), and builds the image into the private buildah store under
a given reference. Caching, locking and archives are tests/support/images.py's job, not this module's.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support import buildah
from tests.support.imagecache import images_dir

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = REPO / "manifests" / "docker"
TEST_DOCKERFILES = Path(__file__).resolve().parent / "dockerfiles"

K8S_VERSION = "v1.37.2"  # the module the control plane is built from (scripts/build-control-plane.sh)
SUITE = "bookworm"  # Debian release of the base image; its python3 is 3.11, as python:3.11-slim
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # what Docker's debian images set
PAUSE_USER = "65535:65535"  # as upstream's pause image
# The host's CA bundle (package registries are reached through it) reaches pip in RUN steps only, so that
# nothing of it ends up in an image. buildah 1.28 leaves an empty file behind for every mount point it has to
# create, so both mounts go onto directories every Debian/Ubuntu image has: the host's certificate folder on
# /mnt, and a private home holding pip's user config on the build's $HOME (/root, or /tmp where a Dockerfile
# sets HOME=/tmp). Not over the image's own bundle: the ca-certificates package rewrites that when installed.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_CERTS_DIR = "/mnt"
BUILD_HOMES = ("/root", "/tmp")
_STEP_TIMEOUT_S = 1800.0

KeyParts = list[tuple[str, bytes | str]]


class ImageBuildError(RuntimeError):
    """A build step outside buildah (debootstrap, gcc) failed; the message has its output's tail."""


@dataclass(frozen=True)
class Recipe:
    parents: tuple[str, ...]
    key_parts: Callable[[], KeyParts]
    # (reference to commit, parent name -> parent reference) -> the image is in the store as that reference
    build: Callable[[str, Mapping[str, str]], None]


def _check(argv: list[str], timeout_s: float = _STEP_TIMEOUT_S, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout_s, cwd=cwd)
    if proc.returncode != 0:
        raise ImageBuildError(f"{shlex.join(argv[:3])} ... exited {proc.returncode}: "
                              f"{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout


def _first_line(argv: list[str]) -> str:
    return _check(argv).splitlines()[0]


def _scratch_image(ref: str, files: Mapping[str, Path], config: list[str]) -> None:
    """`buildah from scratch` + copy + config + commit; the working container never outlives this."""
    with buildah.working_container() as ctr:
        for dest, src in files.items():
            buildah.run("copy", ctr, str(src), dest)
        if config:
            buildah.run("config", *config, ctr)
        buildah.run("commit", "--quiet", ctr, ref)


# --- pause: the sandbox image the kubelet asks containerd for -------------------------------------------

def _k8s_module_dir() -> Path:
    go = shutil.which("go") or "/usr/local/go/bin/go"  # where the Go tarball installs it
    out = _check([go, "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"], timeout_s=600)
    return Path(json.loads(out)["Dir"])


def _pause_source() -> tuple[Path, str]:
    """pause.c and the version string upstream's Makefile compiles into it."""
    pause = _k8s_module_dir() / "build" / "pause"
    tag = next(line.split("?=")[1].strip() for line in (pause / "Makefile").read_text().splitlines()
               if line.startswith("TAG ?="))
    return pause / "linux" / "pause.c", f"v{tag}-ocrjob"


def _pause_cflags(version: str) -> list[str]:
    return ["-Os", "-Wall", "-Werror", "-static", f"-DVERSION={version}"]


def _pause_key() -> KeyParts:
    source, version = _pause_source()
    return [("pause.c", source.read_bytes()), ("cflags", " ".join(_pause_cflags(version))),
            ("gcc", _first_line(["gcc", "--version"])), ("recipe", inspect.getsource(_build_pause))]


def _build_pause(ref: str, parents: Mapping[str, str]) -> None:
    source, version = _pause_source()
    with tempfile.TemporaryDirectory(prefix=".pause-", dir=images_dir()) as tmp:
        binary = Path(tmp) / "pause"
        _check(["gcc", *_pause_cflags(version), "-o", str(binary), str(source)])
        _check(["strip", str(binary)])
        _scratch_image(ref, {"/pause": binary},
                       ["--entrypoint", '["/pause"]', "--user", PAUSE_USER, "--os", "linux"])


# --- base: Debian minbase from the host's apt mirror, the stand-in for debian:bookworm-slim ---------------

def apt_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The first Debian archive (not -security) for SUITE in the host's apt sources (one-line or deb822)."""
    one_line = etc / "sources.list"
    if one_line.exists():
        for line in one_line.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            words = [w for w in words if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    for sources in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in sources.read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines()
                          if ":" in line and not line.startswith(("#", " ")))
            suites = fields.get("Suites", "").split()
            if SUITE in suites and "deb" in fields.get("Types", "").split():
                return fields.get("URIs", "").split()[0]
    return DEFAULT_MIRROR


def _base_key() -> KeyParts:
    return [("suite", SUITE), ("mirror", apt_mirror()), ("debootstrap", _first_line(["debootstrap", "--version"])),
            ("recipe", inspect.getsource(_build_base) + inspect.getsource(_tidy_rootfs))]


def _tidy_rootfs(root: Path) -> None:
    """Drop what is the host's or a cache: apt's downloads and lists, the host's resolv.conf and hostname."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "var/log/*.log", "var/log/apt/*", "etc/resolv.conf", "etc/hostname"):
        for path in root.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
            elif path.is_dir() and path.name != "partial":
                shutil.rmtree(path)


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    prefix = str(root).rstrip("/") + "/"
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def _build_base(ref: str, parents: Mapping[str, str]) -> None:
    root = Path(tempfile.mkdtemp(prefix=".base-rootfs-", dir=images_dir()))
    try:
        _check(["debootstrap", "--variant=minbase", SUITE, str(root), apt_mirror()])
        _tidy_rootfs(root)
        with buildah.working_container() as ctr:
            mnt = buildah.run("mount", ctr)
            _check(["cp", "-a", f"{root}/.", mnt])  # keeps owners, modes, links: `buildah copy` would chown
            buildah.run("umount", ctr)
            buildah.run("config", "--env", f"PATH={IMAGE_PATH}", "--cmd", '["bash"]', "--os", "linux", ctr)
            buildah.run("commit", "--quiet", ctr, ref)
    finally:
        for point in _mounts_under(root):  # debootstrap mounts /proc and /sys in the target; a failure leaves them
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


# --- Dockerfile images ---------------------------------------------------------------------------------

def _instructions(dockerfile: Path) -> list[list[str]]:
    """The Dockerfile's instructions as word lists (continuations joined, comments dropped)."""
    out: list[list[str]] = []
    current = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            out.append(current.split())
        current = ""
    return out


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths the Dockerfile COPYs (no --from stages here)."""
    out: list[str] = []
    for words in _instructions(dockerfile):
        if words[0].upper() == "COPY":
            out += [w for w in words[1:-1] if not w.startswith("--")]
    return out


def context_files(dockerfile: Path) -> list[str]:
    """Repository files under the COPY sources: tracked or new, never ignored (no caches, no venvs)."""
    sources = copy_sources(dockerfile)
    if not sources:
        return []
    listed = _check(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *sources], cwd=REPO)
    return sorted({f for f in listed.split("\0") if f and (REPO / f).is_file()})


def _build_home(root: Path) -> Path:
    """A home for RUN steps whose pip config names the mounted host CA bundle (PIP_CERT, without an ENV)."""
    conf = root / ".config" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[global]\ncert = {BUILD_CERTS_DIR}/{HOST_CA_BUNDLE.name}\n")
    root.chmod(0o1777)  # it stands in for /tmp too, where unprivileged build steps may write
    return root


def _build_volumes(home: Path) -> list[str]:
    return [f"{HOST_CA_BUNDLE.parent}:{BUILD_CERTS_DIR}:ro", *(f"{home}:{h}" for h in BUILD_HOMES)]


@dataclass(frozen=True)
class DockerfileImage:
    """An image built by `buildah bud` from a Dockerfile, its BASE_IMAGE being a parent's reference."""

    dockerfile: Path
    base: str  # parent image name
    build_args: tuple[tuple[str, str], ...] = ()

    def args(self, parents: Mapping[str, str]) -> dict[str, str]:
        return {"BASE_IMAGE": parents[self.base], **dict(self.build_args)}

    def key_parts(self) -> KeyParts:
        parts: KeyParts = [("dockerfile", self.dockerfile.read_text()), ("args", repr(self.build_args)),
                           ("volumes", repr(_build_volumes(Path("HOME")))),
                           ("recipe", inspect.getsource(DockerfileImage) + inspect.getsource(_build_home))]
        for rel in context_files(self.dockerfile):
            path = REPO / rel
            parts.append((f"file:{rel}:{os.stat(path).st_mode & 0o777:o}", path.read_bytes()))
        return parts

    def build(self, ref: str, parents: Mapping[str, str]) -> None:
        with tempfile.TemporaryDirectory(prefix=".context-", dir=images_dir()) as tmp:
            context, home = Path(tmp) / "context", _build_home(Path(tmp) / "home")
            for rel in context_files(self.dockerfile):
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, context / rel)
            context.mkdir(exist_ok=True)
            buildah.bud(self.dockerfile, context, ref, self.args(parents), _build_volumes(home))

    def recipe(self) -> Recipe:
        return Recipe((self.base,), self.key_parts, self.build)


PYTHON_BASE = DockerfileImage(TEST_DOCKERFILES / "python-base.Dockerfile", "base")
OPERATOR = DockerfileImage(DOCKERFILES / "operator.Dockerfile", "python-base")
INFERENCE_CPU = DockerfileImage(DOCKERFILES / "inference-cpu.Dockerfile", "base")

RECIPES: dict[str, Recipe] = {
    "pause": Recipe((), _pause_key, _build_pause),
    "base": Recipe((), _base_key, _build_base),
    "python-base": PYTHON_BASE.recipe(),
    "operator": OPERATOR.recipe(),
    "inference-cpu": INFERENCE_CPU.recipe(),
}
