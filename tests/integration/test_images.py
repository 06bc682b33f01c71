"""OcrJob's images, built with debootstrap + buildah (no Docker daemon, no registry) and run with runc.

Every image builds and is found in the cache the second time (same archive file, not rewritten); every
archive is a valid OCI layout naming its reference; nothing of the build's CA plumbing is baked in; and the
images run as real containers shaped like restricted pods (uid 10001 without a passwd entry, read-only
root, tmpfs /tmp, no network): pause prints its version, the operator starts, the CPU inference image OCRs
a page offline. Pods on a real node (tests/support/realnode) are the next step up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_pod.local.samples import render_page
from tests.support import buildah, runc
from tests.support.image_recipes import BUILD_CERTS_DIR, HOST_CA_BUNDLE
from tests.support.imagecache import KEEP_PER_NAME
from tests.support.images import NAMES, BuiltImage, ensure
from tests.support.ociarchive import OciImage, open_archive, unpack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in ("buildah", "debootstrap", "runc")),
                       reason="needs root, buildah, debootstrap and runc"),
]
WORDS = ["OcrJob", "offline", "container"]


@pytest.fixture(scope="module")
def built() -> dict[str, BuiltImage]:
    return {name: ensure(name) for name in NAMES}


@pytest.fixture(scope="module")
def unpacked(built: dict[str, BuiltImage], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, tuple[OciImage, Path]]]:
    """Each archive checked and unpacked the way a runtime does it (not from buildah's store)."""
    root = tmp_path_factory.mktemp("images")
    try:
        out = {}
        for name, image in built.items():
            oci = open_archive(image.archive, root / name / "layout")
            out[name] = (oci, unpack(oci, root / name / "rootfs"))
            shutil.rmtree(root / name / "layout")  # the blobs are in rootfs now; the inference image is large
        yield out
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("name", NAMES)
def test_second_ensure_is_a_cache_hit(built: dict[str, BuiltImage], name: str) -> None:
    first = built[name]
    before = first.archive.stat()
    again = ensure(name)
    assert again == first
    after = again.archive.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert buildah.has_image(first.ref)


@pytest.mark.parametrize("name", NAMES)
def test_archive_is_a_valid_oci_image_named_by_its_ref(built: dict[str, BuiltImage],
                                                      unpacked: dict[str, tuple[OciImage, Path]], name: str) -> None:
    oci, _ = unpacked[name]
    assert oci.ref == built[name].ref
    assert built[name].archive.name.startswith(f"{name}-{built[name].ref.rsplit(':', 1)[1]}")
    assert oci.config["os"] == "linux" and oci.config["architecture"] == "amd64"


def test_builds_leave_no_working_containers(built: dict[str, BuiltImage]) -> None:
    ours = {img.ref for img in built.values()}
    listed = json.loads(buildah.run("containers", "--json") or "null") or []
    assert not [c for c in listed if c.get("imagename") in ours]


@pytest.mark.parametrize("name", ["python-base", "operator", "inference-cpu"])
def test_nothing_of_the_build_ca_plumbing_is_baked_in(unpacked: dict[str, tuple[OciImage, Path]], name: str) -> None:
    oci, rootfs = unpacked[name]
    assert not list((rootfs / BUILD_CERTS_DIR.lstrip("/")).iterdir())
    assert not (rootfs / "etc" / "pip.conf").exists()
    assert not (rootfs / "root" / ".config").exists() and not list((rootfs / "tmp").iterdir())
    assert not any(e.startswith(("PIP_CERT=", "REQUESTS_CA_BUNDLE=")) for e in oci.process.get("Env") or [])
    bundle = rootfs / "etc" / "ssl" / "certs" / HOST_CA_BUNDLE.name
    assert not bundle.exists() or bundle.read_bytes() != HOST_CA_BUNDLE.read_bytes()


def test_images_run_as_numeric_non_root_users(unpacked: dict[str, tuple[OciImage, Path]]) -> None:
    users = {name: oci.process.get("User") for name, (oci, _) in unpacked.items()}
    assert users["pause"] == "65535:65535"
    assert users["operator"] == users["inference-cpu"] == "10001:10001"
    assert not any("10001" in line for line in (unpacked["operator"][1] / "etc" / "passwd").read_text().splitlines())


def test_pause_runs(unpacked: dict[str, tuple[OciImage, Path]], tmp_path: Path) -> None:
    oci, rootfs = unpacked["pause"]
    done = runc.run(oci, rootfs, tmp_path, args=["/pause", "-v"], user=(65535, 65535), timeout_s=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pause.c v")


def test_operator_starts_as_uid_without_passwd_entry(unpacked: dict[str, tuple[OciImage, Path]],
                                                     tmp_path: Path) -> None:
    oci, rootfs = unpacked["operator"]
    helped = runc.run(oci, rootfs, tmp_path / "help", args=["python", "-m", "ocrjob_operator", "--help"])
    assert helped.returncode == 0, helped.stderr
    assert "--leader-election" in helped.stdout
    # kopf's default identity calls getpass.getuser(): a KeyError for uid 10001 without a passwd entry.
    identity = runc.run(oci, rootfs, tmp_path / "id",
                        args=["python", "-c", "from ocrjob_operator import leader; print(leader.make_identity())"])
    assert identity.returncode == 0, identity.stderr
    assert identity.stdout.strip()
    probe = "\n".join([
        "import errno, os",
        "try:",
        "    open('/probe', 'w')",
        "except OSError as e:",
        "    assert e.errno == errno.EROFS, e",
        "else:",
        "    raise SystemExit('root filesystem is writable')",
        "open('/tmp/probe', 'w').write('x')",
        "print(os.getuid(), os.getgid(), os.listdir('/sys/class/net'))",
    ])
    shaped = runc.run(oci, rootfs, tmp_path / "probe", args=["python", "-c", probe])
    assert shaped.returncode == 0, shaped.stderr
    assert shaped.stdout.split(None, 2)[:2] == ["10001", "10001"] and "eth" not in shaped.stdout
    # The image's own command runs to where it needs a cluster (there is none: a configuration error).
    started = runc.run(oci, rootfs, tmp_path / "start")
    assert started.returncode != 0 and "Kubernetes client" in started.stderr, started.stderr


def test_cpu_inference_image_ocrs_a_page_offline(unpacked: dict[str, tuple[OciImage, Path]], tmp_path: Path) -> None:
    oci, rootfs = unpacked["inference-cpu"]
    pages, results = tmp_path / "in", tmp_path / "out"
    pages.mkdir()
    results.mkdir()
    render_page([" ".join(WORDS)]).save(pages / "page.png")
    os.chown(results, *runc.RESTRICTED_USER)
    done = runc.run(oci, rootfs, tmp_path / "ctr", args=["ocrjob", "run", "--input", "/in", "--output", "/out"],
                    binds=[runc.Bind(pages, "/in"), runc.Bind(results, "/out", read_only=False)], timeout_s=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((results / "page.png.json").read_text())
    text = json.dumps(record)
    assert all(word in text for word in WORDS), text[:2000]


def test_cpu_inference_image_defaults(unpacked: dict[str, tuple[OciImage, Path]]) -> None:
    oci, rootfs = unpacked["inference-cpu"]
    env = dict(e.split("=", 1) for e in oci.process["Env"])
    assert env["HOME"].startswith("/tmp") and env["OCRJOB_CACHE"].startswith("/tmp")
    assert env["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] == "True"
    models = rootfs / env["OCRJOB_MODELS_DIR"].lstrip("/")
    assert (models / ".ocrjob-bundle.json").is_file()
    listed = subprocess.run(["find", str(models), "!", "-perm", "-a+r"], capture_output=True, text=True, check=True)
    assert not listed.stdout.strip()


def test_concurrent_builders_build_once_then_stale_entries_are_pruned(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """In a private cache (and store): two processes ask for pause at once; one builds, both get it. The next
    build prunes archives beyond the newest few, dead builders' temp files, and tags without an archive."""
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("OCRJOB_CACHE", str(tmp_path / "cache"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "operator")])}
    argv = [sys.executable, "-m", "tests.support.images", "build", "pause"]
    try:
        procs = [subprocess.Popen(argv, env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert outs[0][0] == outs[1][0] and len(outs[0][0].split()) == 3
        assert sum("pause: built" in err for _, err in outs) == 1
        image = ensure("pause")
        assert outs[0][0].split() == [image.name, image.ref, str(image.archive)]

        buildah.run("tag", image.ref, image.ref.rsplit(":", 1)[0] + ":999999999999")  # a tag without archive
        older = [image.archive.with_name(f"pause-{i:012d}.oci.tar") for i in range(KEEP_PER_NAME)]
        for age, path in enumerate(older):  # older[0] newest
            path.write_bytes(b"")
            os.utime(path, (1e9 - age, 1e9 - age))
        dead_builder = image.archive.with_name(f".{image.archive.name}.tmp-{2**22 + 1}")  # above pid_max's default
        dead_builder.write_bytes(b"")
        neighbour = image.archive.with_name("pause-x-000000000000.oci.tar")  # another image's name, kept
        neighbour.write_bytes(b"")
        image.archive.unlink()
        assert ensure("pause") == image and image.archive.is_file()
        assert [p.exists() for p in older] == [True] * (KEEP_PER_NAME - 1) + [False]  # the newest few are kept
        assert not dead_builder.exists() and neighbour.exists()
        assert buildah.images_named(image.ref.rsplit(":", 1)[0]) == [image.ref]
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path / "cache")], check=False)
