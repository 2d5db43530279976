"""A local Ray head for a test: absent at the start, stopped at the end with no process left."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlplatform.serving.local import LocalRayConfig, LocalRayHead


@contextmanager
def fresh_ray_head(port: int, environ: Mapping[str, str] | None = None, unset: Iterable[str] = (),
                   root: Path | None = None) -> Iterator[LocalRayHead]:
    """The head of MLPLATFORM_RAY_PORT `port` (started by the first deploy), with `environ` set and
    `unset` removed from os.environ meanwhile (the notebook's environment, as the API reads it).
    `root`: its MLPLATFORM_RAY_DIR (the local platform's: `platform.ray_dir`), else the default."""
    touched = set(environ or {}) | set(unset)
    saved = {k: os.environ.get(k) for k in touched}
    for k in unset:
        os.environ.pop(k, None)
    os.environ.update(environ or {})
    head = LocalRayHead(LocalRayConfig(port=port, root=root))
    head.stop()  # a head left by an interrupted run
    shutil.rmtree(head.root, ignore_errors=True)
    try:
        yield head
    finally:
        head.stop()
        left = head.processes()
        naming = [line for line in _processes() if str(head.root) in line]
        shutil.rmtree(head.root, ignore_errors=True)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        assert left == [], f"Ray processes left behind: {left}"
        assert naming == [], f"processes still name the head's directory: {naming}"


def local_backend_environ(port: int, tracking_uri: str) -> dict[str, str]:
    """A notebook's environment on the local backend."""
    return {"MLPLATFORM_BACKEND": "local", "MLPLATFORM_RAY_PORT": str(port), "MLFLOW_TRACKING_URI": tracking_uri}


def _processes() -> list[str]:
    return subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout.splitlines()
