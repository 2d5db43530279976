"""Look at the real notebook server processes the local spawner started."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def server_process(username: str, hub_api_port: int | None = None) -> tuple[int, dict[str, str], Path]:
    """(pid, environment, working directory) of `username`'s running single-user server; with `hub_api_port`,
    only a server of that hub (another platform on the machine may have a user of the same name)."""
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
        if env.get("JUPYTERHUB_USER") == username and (
                hub_api_port is None or urlparse(env.get("JUPYTERHUB_API_URL", "")).port == hub_api_port):
            return int(proc.name), env, Path(proc / "cwd").resolve()
    raise LookupError(f"no single-user server process of {username}"
                      + (f" for the hub API on port {hub_api_port}" if hub_api_port else ""))


def processes_with(app_id: str) -> list[str]:
    """Live processes whose environment carries the application id (every process of the job does)."""
    marker = f"MLPLATFORM_SPARK_APP_ID={app_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {cmdline[:160]}")
        except OSError:
            pass
    return found
