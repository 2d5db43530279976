"""The local platform's notebook server starts no Node.js process: JupyterLab's server extension runs
`node yarn.js config --json` when imported (~0.9 s of CPU before the server listens), which
`mlplatform-jupyterhub-singleuser` skips. Its JupyterLab also checks no build on page loads and jupyter-lsp
searches for no language server (the package's page config, installed by scripts/install; the local
spawner's arguments)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from hub_config.spawners.local import LocalPlatformSpawner

# Imports JupyterLab's server extension as the server's start does, and prints every command run meanwhile.
PROBE = textwrap.dedent("""
    import json, subprocess, sys
    commands = []
    popen = subprocess.Popen.__init__
    def recorded(self, args, *rest, **kwargs):
        commands.append([str(a) for a in args])
        popen(self, args, *rest, **kwargs)
    subprocess.Popen.__init__ = recorded
    if sys.argv[1] == "mlplatform":
        from mlplatform import singleuser
        singleuser.skip_yarn_config()
    import jupyterlab.labapp
    print(json.dumps(commands))
""")


def commands_run(server: str) -> list[list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, server], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_the_platforms_server_runs_no_node_process_at_start():
    assert commands_run("mlplatform") == []
    # What it spares: JupyterLab's own start runs yarn through node (if not, this skip is no longer needed).
    assert any(Path(c[0]).name == "node" and "config" in c for c in commands_run("jupyterhub"))


def test_the_local_spawner_starts_the_platforms_server():
    [command] = LocalPlatformSpawner().cmd
    assert command == str(Path(sys.executable).parent / "mlplatform-jupyterhub-singleuser")
    assert Path(command).exists()


def test_jupyterlab_checks_no_build_and_jupyter_lsp_searches_no_language_server():
    from jupyterlab_server.config import get_static_page_config

    page = get_static_page_config(level="all")
    assert (page["buildCheck"], page["buildAvailable"]) == (False, False)
    assert "--LanguageServerManager.autodetect=False" in LocalPlatformSpawner().get_args()
