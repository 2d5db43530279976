"""A local Ray head for a test: absent at the start, stopped at the end with no process left."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlplatform import serving
from mlplatform.serving.local import LocalRayConfig, LocalRayHead


@contextmanager
def fresh_ray_head(port: int, environ: Mapping[str, str] | None = None, unset: Iterable[str] = (),
                   root: Path | None = None) -> Iterator[LocalRayHead]:
    """The head of MLPLATFORM_RAY_PORT `port` (started by the first deploy), with `environ` set and
    `unset` removed from os.environ meanwhile (the notebook's environment, as the API reads it).
    `root`: its MLPLATFORM_RAY_DIR (the local platform's: `platform.ray_dir`), else the default."""
    head = LocalRayHead(LocalRayConfig(port=port, root=root))
    head.stop()  # a head left by an interrupted run
    shutil.rmtree(head.root, ignore_errors=True)
    try:
        with patched_environ(environ, unset):
            yield head
    finally:
        head.stop()
        left = head.processes()
        naming = [line for line in _processes() if str(head.root) in line]
        runtime_left = runtime_directory_left(head)
        shutil.rmtree(head.root, ignore_errors=True)
        shutil.rmtree(head.config.runtime_directory, ignore_errors=True)
        assert left == [], f"Ray processes left behind: {left}"
        assert naming == [], f"processes still name the head's directory: {naming}"
        assert runtime_left is None, f"the stopped head left its runtime directory in /tmp: {runtime_left}"


def runtime_directory_left(head: LocalRayHead) -> Path | None:
    """The stopped head's own runtime directory in /tmp (its sockets and Ray's session files, when the root is too
    long a path for them), if still there; None when it is gone or is the root itself (which keeps the
    applications' records across a head's restarts)."""
    runtime = head.config.runtime_directory
    return runtime if runtime != head.root and os.path.lexists(runtime) else None


@contextmanager
def module_on_shared_head(head: LocalRayHead, environ: Mapping[str, str], unset: Iterable[str] = (),
                          restart: bool = False) -> Iterator[LocalRayHead]:
    """A test module's turn on the session's shared head (conftest.py's `shared_ray_head`): `environ` set and
    `unset` removed meanwhile, and every application the module left deleted at its end, so the next module
    finds the head as empty as a fresh one (a head start costs 20-30 s here). `restart`: the head stopped
    first, for a module whose first deploy must start it."""
    if restart:
        head.stop()
    with patched_environ(environ, unset):
        try:
            yield head
        finally:
            for record in sorted((head.root / "apps").glob("*.json")):
                if record.stem.startswith("_"):  # _spare.json: the warm spare, not an application (local.py)
                    continue
                with contextlib.suppress(serving.DeploymentNotFound):
                    serving.delete(record.stem)


@contextmanager
def patched_environ(environ: Mapping[str, str] | None = None, unset: Iterable[str] = ()) -> Iterator[None]:
    """os.environ with `environ` set and `unset` removed, restored afterwards."""
    touched = set(environ or {}) | set(unset)
    saved = {k: os.environ.get(k) for k in touched}
    for k in unset:
        os.environ.pop(k, None)
    os.environ.update(environ or {})
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def local_backend_environ(port: int, tracking_uri: str) -> dict[str, str]:
    """A notebook's environment on the local backend."""
    return {"MLPLATFORM_BACKEND": "local", "MLPLATFORM_RAY_PORT": str(port), "MLFLOW_TRACKING_URI": tracking_uri}


def _processes() -> list[str]:
    return subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout.splitlines()
