"""Install benchmark: a fresh venv with `.[local,test]` at the lock's versions, by each installer, warm caches.

    .venv/bin/python bench/install.py --runs 3                      # uv, pip -c, pip --no-deps
    .venv/bin/python bench/install.py --runs 3 --installers uv

Each installer puts the project (editable) and every distribution of constraints.txt (the lock, made by
scripts/lock) into a new venv of its own, compiling bytecode, as scripts/install does:

  uv            `uv pip install --compile-bytecode -c constraints.txt -e .[local,test] --offline`, online where that
                fails (the cache lacks a distribution) — scripts/install's commands: with every distribution
                pinned uv has nothing to choose; it links files from its cache
  pip -c        `pip install -c constraints.txt -e .[local,test]`: pip's resolver walks the requirements, each
                pinned by the lock (the way images/* install)
  pip --no-deps `pip install --no-deps -r constraints.txt`, then `pip install --no-deps -e .`: no resolver at all,
                the lock's list as it is

Caches are warmed first (one untimed install per installer into a throw-away venv; `--no-warm-up` skips it when
they are known to be warm): pip's in ~/.cache/pip (its wheel of pyspark's sdist included), uv's in ~/.cache/uv.
Figures: seconds from the empty venv to the installed one, median with the spread (min–max) over `--runs`.
The venvs are made with the Python that runs this script (3.11, the lock's).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "constraints.txt"
EXTRAS = ".[local,test]"


def uv_binary() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        raise SystemExit("uv is not installed (scripts/install puts it in .venv)")
    return found


def commands(installer: str, venv: Path) -> list[list[str]]:
    python, pip = str(venv / "bin" / "python"), [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                                  "--disable-pip-version-check"]
    if installer == "uv":
        return [[uv_binary(), "pip", "install", "--quiet", "--compile-bytecode", "--python", python, "-c", str(LOCK),
                 "-e", EXTRAS, "--offline"]]
    if installer == "pip -c":
        return [[*pip, "-c", str(LOCK), "-e", EXTRAS]]
    if installer == "pip --no-deps":
        return [[*pip, "--no-deps", "-r", str(LOCK)], [*pip, "--no-deps", "-e", "."]]
    raise ValueError(installer)


INSTALLERS = ("uv", "pip -c", "pip --no-deps")


def install(installer: str, folder: Path) -> float:
    """Seconds to install into a new venv under `folder` (the venv's own creation not counted)."""
    venv = folder / installer.replace(" ", "").replace("-", "")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    t = time.perf_counter()
    for command in commands(installer, venv):
        if "--offline" in command and subprocess.run(command, cwd=REPO, stderr=subprocess.DEVNULL).returncode == 0:
            continue
        # As scripts/install: online when the cache lacks a distribution (it then adds it to the cache).
        subprocess.run([part for part in command if part != "--offline"], cwd=REPO, check=True)
    took = time.perf_counter() - t
    shutil.rmtree(venv)
    return took


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--installers", type=lambda s: s.split(","), default=list(INSTALLERS),
                   help=f"comma-separated, of {', '.join(INSTALLERS)} (default: all)")
    p.add_argument("--no-warm-up", action="store_true", help="skip the untimed install that warms each cache")
    args = p.parse_args(argv)
    if unknown := set(args.installers) - set(INSTALLERS):
        p.error(f"unknown installers {sorted(unknown)}; allowed: {', '.join(INSTALLERS)}")
    times: dict[str, list[float]] = {name: [] for name in args.installers}
    with tempfile.TemporaryDirectory(prefix="mlplatform-install-bench-") as tmp:
        if not args.no_warm_up:
            for name in args.installers:
                print(f"warming {name}'s cache: {install(name, Path(tmp)):.1f} s", flush=True)
        for run in range(args.runs):
            # The order rotates, so no installer always runs right after another's disk writes.
            order = args.installers[run % len(args.installers):] + args.installers[:run % len(args.installers)]
            for name in order:
                times[name].append(install(name, Path(tmp)))
                print(f"run {run + 1}/{args.runs} {name}: {times[name][-1]:.1f} s", flush=True)
    print(f"\nfresh venv, {EXTRAS} at the lock's versions, warm cache (n={args.runs})")
    print(f"{'installer':<14} {'median s':>9}  spread (min–max)")
    for name, values in times.items():
        print(f"{name:<14} {statistics.median(values):9.1f}  {min(values):.1f}–{max(values):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
