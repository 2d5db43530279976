"""An image's Python without Docker: the build context (`COPY . /src`, less what .dockerignore leaves out)
and one extra installed from it as the Dockerfiles install it (`-c constraints.txt "<src>[<extra>]"`, not
editable) into a fresh venv, with uv from the cache `scripts/install` fills (it links files: seconds)."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv", path=str(Path(sys.executable).parent))
# What of this process's environment must not reach an image's processes: its venv, Jupyter paths, Python
# settings, and the platform's variables.
FOREIGN = ("PYTHON", "JUPYTER", "VIRTUAL_ENV", "MLPLATFORM_", "JUPYTERHUB_", "UV_PYTHON")


class ImageVenvError(AssertionError):
    pass


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}


def dockerignored(root: Path):
    """A copytree `ignore` for .dockerignore's patterns (at the root, or at any depth with `**/`)."""
    patterns = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(root)
        ignored = set()
        for name in names:
            path = (relative / name).as_posix()
            for pattern in patterns:
                if fnmatch.fnmatch(path, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(name, pattern[3:])):
                    ignored.add(name)
        return ignored

    return ignore


def build_context(dest: Path) -> Path:
    """The images' `COPY . /src`: the repository less what .dockerignore leaves out."""
    shutil.copytree(ROOT, dest, ignore=dockerignored(ROOT))
    return dest


def install_extra(extra: str, src: Path, venv: Path) -> Path:
    """A fresh venv at `venv` with `<src>[<extra>]` and nothing else; ImageVenvError says what failed."""
    if UV is None:  # a test dependency: its absence is a broken install
        raise ImageVenvError("uv is not installed in this venv: run scripts/install --test")
    env = clean_environ()

    def run(argv):
        return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=venv.parent,
                              timeout=600)

    made = run([UV, "venv", "--quiet", "--no-project", "--python", sys.executable, str(venv)])
    if made.returncode != 0:
        raise ImageVenvError(f"uv venv failed:\n{made.stderr[-3000:]}")
    install = [UV, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
               "-c", str(src / "constraints.txt"), f"{src}[{extra}]"]
    # Offline: the lock's versions straight from the cache that scripts/install filled, no index asked
    # (and no sdist rebuilt where a proxy strips PyPI's cache headers); online if the cache lacks some.
    installed = run([*install, "--offline"])
    if installed.returncode != 0:
        installed = run(install)
    if installed.returncode != 0:
        raise ImageVenvError(f"uv pip install -c constraints.txt '.[{extra}]' failed:\n{installed.stderr[-3000:]}")
    return venv
