"""Look at the real notebook server processes the local spawner started."""

from __future__ import annotations

from pathlib import Path


def server_process(username: str) -> tuple[int, dict[str, str], Path]:
    """(pid, environment, working directory) of `username`'s running single-user server."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if not any(part.endswith(b"jupyterhub-singleuser") for part in cmdline):
                continue
            raw = (proc / "environ").read_bytes()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
        if env.get("JUPYTERHUB_USER") == username:
            return int(proc.name), env, Path(proc / "cwd").resolve()
    raise LookupError(f"no single-user server process of {username}")
