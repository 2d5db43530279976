"""The local platform's Git server (hub_config/local/git_server.py) for a test: real `git http-backend` behind HTTP
Basic authentication, its bare repositories under a directory of the test's.

    with git_server(root, port, {"platform": token}) as server:
        server.new_repository("gitops")              # a bare repository with a first commit on main
        url = f"{server.url}/gitops.git"
        server.git("gitops", "log", "--format=%s")   # read the bare repository directly
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from hub_config.local import git_server as server_module

REPO = Path(__file__).resolve().parents[2]
README = "GitOps: what users deploy: one file per object\n"  # not YAML


@dataclass
class Server:
    root: Path
    log: Path
    url: str  # the repositories' base URL: <url>/<name>.git

    def bare(self, name: str) -> Path:
        return self.root / "platform" / f"{name}.git"

    def git(self, name: str, *args: str) -> str:
        return subprocess.run(["git", f"--git-dir={self.bare(name)}", *args], capture_output=True, text=True,
                              check=True).stdout

    def new_repository(self, name: str) -> str:
        """A bare repository `name` with a first commit (README.md) on main; its clone URL."""
        server_module.init_repository(self.bare(name), files={"README.md": README},
                                      committer=("mlplatform", "p@x.org"), message="The platform's GitOps repository")
        return f"{self.url}/{name}.git"


@contextmanager
def git_server(root: Path, port: int, credentials: dict[str, str]) -> Iterator[Server]:
    log = root.parent / f"{root.name}-git-server.log"
    cmd, env = server_module.command(root, port, credentials)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
                break
            except requests.RequestException:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield Server(root, log, f"http://127.0.0.1:{port}/platform")
    finally:
        proc.terminate()
        proc.wait(10)
