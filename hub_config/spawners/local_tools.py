"""What a local notebook server's kernels and terminals run: the tools of the hub's own venv.

The local spawner starts `jupyterhub-singleuser` of the hub's Python, so the AWS CLI, the credential
process, mlflow and ray are that venv's console scripts. A server finds them whatever PATH the hub was
started with (`.venv/bin/jupyterhub` without an activated venv), and the SDKs find the credential process
whatever PATH a shell sets (a login shell, `env -i`, a script's own PATH): the server's AWS config names it
by absolute path.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from mlplatform_core.aws import CREDENTIAL_PROCESS, aws_config_text
from mlplatform_core.files import write_text

VENV_BIN = Path(sys.executable).parent  # not resolved: a venv's python is a link to the base Python's

# A JupyterLab terminal is a plain interactive bash with the server's environment, as the kernel has it.
# jupyter_server's default for a server it did not start in a terminal is a login shell, whose /etc/profile
# resets PATH to the system's and hides the venv (`aws: command not found`). Restoring PATH after a login
# shell would need a profile file of ours in every home; not being a login shell needs nothing.
TERMINAL_SHELL_ARG = "--ServerApp.terminado_settings=shell_command=/bin/bash"

# jupyter-lsp looks for ~20 language servers on each start, while the first page loads (~0.35 s of CPU); the
# platform's venv has none. A user who installs one starts their own server, or the platform sets this back.
NO_LANGUAGE_SERVER_SEARCH_ARG = "--LanguageServerManager.autodetect=False"


def server_path(path: str | None) -> str:
    """PATH with the venv's bin/ first, unless it is on PATH already."""
    entries = [entry for entry in (path or "").split(os.pathsep) if entry]
    if str(VENV_BIN) in entries:
        return os.pathsep.join(entries)
    return os.pathsep.join([str(VENV_BIN), *entries])


def credential_process_command() -> str:
    """The venv's credential process by absolute path; the bare name (looked up on PATH) only where the hub's
    venv has none (a hub-only install, whose servers would not start anyway)."""
    return shutil.which(CREDENTIAL_PROCESS, path=str(VENV_BIN)) or CREDENTIAL_PROCESS


def write_aws_config(data_dir: str | Path) -> Path:
    """`<data_dir>/aws_config`, the local servers' AWS config (no secret in it), rewritten when it changed."""
    path = Path(data_dir, "aws_config")
    text = aws_config_text(credential_process_command())
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text, mode=0o644)
    return path
