"""Run an unpacked image as a real container with runc, shaped like a restricted pod, without a kubelet.

Numeric non-root user, read-only root filesystem, a tmpfs on /tmp (the pods' emptyDir), no capabilities,
no new privileges, and its own network namespace with nothing but a downed loopback: nothing can be
reached, so whatever runs inside proves it works offline. State, cgroups and the container are removed
again on exit, also after a failure or a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.ociarchive import OciImage

RESTRICTED_USER = (10001, 10001)  # the images' USER; no passwd entry exists for it
_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Bind:
    source: Path
    destination: str
    read_only: bool = True


def _process(image: OciImage, args: Sequence[str] | None, user: tuple[int, int],
             env: Mapping[str, str]) -> dict:
    cfg = image.process
    image_env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
    argv = list(args) if args is not None else [*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])]
    return {
        "terminal": False, "user": {"uid": user[0], "gid": user[1]}, "args": argv,
        "env": [f"{k}={v}" for k, v in {**image_env, **env}.items()], "cwd": cfg.get("WorkingDir") or "/",
        "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}], "noNewPrivileges": True,
    }


def config(image: OciImage, rootfs: Path, container_id: str, *, args: Sequence[str] | None = None,
           user: tuple[int, int] = RESTRICTED_USER, env: Mapping[str, str] | None = None,
           binds: Sequence[Bind] = ()) -> dict:
    """config.json: runc's own defaults (`runc spec`), restricted as the module docstring says."""
    spec = _runc_spec()
    spec["process"] = _process(image, args, user, env or {})
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["hostname"] = "ocrjob-test"
    spec["mounts"] += [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "nodev", "mode=1777", "size=1g"]}]
    spec["mounts"] += [{"destination": b.destination, "type": "bind", "source": str(b.source),
                        "options": ["rbind", "ro" if b.read_only else "rw"]} for b in binds]
    linux = spec["linux"]
    linux["cgroupsPath"] = f"/{container_id}"
    assert {"type": "network"} in linux["namespaces"], "runc's default spec must give a network namespace"
    return spec


def _runc_spec() -> dict:
    """`runc spec` writes config.json into the current folder only: run it in a scratch one."""
    with tempfile.TemporaryDirectory(prefix="ocrjob-runc-spec-") as tmp:
        subprocess.run(["runc", "spec"], cwd=tmp, check=True, capture_output=True)
        return json.loads((Path(tmp) / "config.json").read_text())


def run(image: OciImage, rootfs: Path, workdir: Path, *, args: Sequence[str] | None = None,
        user: tuple[int, int] = RESTRICTED_USER, env: Mapping[str, str] | None = None,
        binds: Sequence[Bind] = (), timeout_s: float = _TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run the container to completion; its exit status and output. `workdir` holds the bundle and runc state."""
    container_id = f"ocrjob-images-{uuid.uuid4().hex[:12]}"
    bundle, state = workdir / "bundle", workdir / "runc-state"
    bundle.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    spec = config(image, rootfs, container_id, args=args, user=user, env=env, binds=binds)
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    runc = ["runc", "--root", str(state)]
    try:
        return subprocess.run([*runc, "run", "--bundle", str(bundle), container_id], capture_output=True,
                              text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, check=False,
                              env={**os.environ, "XDG_RUNTIME_DIR": str(state)})
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([*runc, "delete", "--force", container_id], capture_output=True, timeout=60, check=False)
