"""What a local server's kernels and terminals run (hub_config/spawners/local_tools.py): the venv's tools on
the server's PATH, the credential process named by absolute path, a terminal that is no login shell.

The AWS CLI run with a PATH without the venv is the terminal's case of issue 13: before, it failed with
`[Errno 2] No such file or directory: 'mlplatform-aws-credentials'`."""

import logging
import os
import subprocess
import sys
from pathlib import Path

from botocore.compat import compat_shell_split
from jupyterhub.objects import Hub

from hub_config.spawners.local import LocalPlatformSpawner
from hub_config.spawners.local_tools import TERMINAL_SHELL_ARG, VENV_BIN, server_path, write_aws_config
from mlplatform_core.aws import AWS_CONFIG, aws_config_text

from ..support.hub_user import User

CREDENTIAL_PROCESS = VENV_BIN / "mlplatform-aws-credentials"


def credential_process_of(text: str) -> list[str]:
    """The command botocore runs for the config's default profile."""
    [line] = [line for line in text.splitlines() if line.startswith("credential_process")]
    return compat_shell_split(line.partition("=")[2].strip())


def test_the_packaged_config_names_the_credential_process_on_path_and_others_by_a_quoted_path():
    assert aws_config_text() == AWS_CONFIG.read_text()  # Kubernetes' ConfigMap: the images' /usr/local/bin
    assert credential_process_of(aws_config_text()) == ["mlplatform-aws-credentials"]
    assert credential_process_of(aws_config_text("/opt/my venv/bin/mlplatform-aws-credentials")) == [
        "/opt/my venv/bin/mlplatform-aws-credentials"]


def test_the_local_config_names_the_venvs_credential_process_and_is_rewritten_only_when_it_changed(tmp_path):
    path = write_aws_config(tmp_path / "data")
    assert path == tmp_path / "data" / "aws_config"
    assert credential_process_of(path.read_text()) == [str(CREDENTIAL_PROCESS)] and CREDENTIAL_PROCESS.is_file()
    assert (path.stat().st_mode & 0o777) == 0o644  # no secret in it; the servers run as the hub's user
    written = path.stat().st_mtime_ns
    assert write_aws_config(tmp_path / "data") == path and path.stat().st_mtime_ns == written
    path.write_text("[default]\ncredential_process = mlplatform-aws-credentials\n")  # an older platform's
    assert credential_process_of(write_aws_config(tmp_path / "data").read_text()) == [str(CREDENTIAL_PROCESS)]


def test_the_aws_cli_runs_the_credential_process_with_a_path_that_lacks_the_venv(tmp_path):
    # `env PATH=/usr/bin:/bin /…/.venv/bin/aws …` in a terminal (a login shell, a script's own PATH): the
    # credential process runs and refuses for want of the server's environment; it is found, not Errno 2.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(write_aws_config(tmp_path)),
           "AWS_REGION": "us-east-1"}
    result = subprocess.run([str(VENV_BIN / "aws"), "s3", "ls", "s3://platform/", "--endpoint-url",
                             "http://127.0.0.1:9"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "No such file or directory" not in result.stderr, result.stderr
    assert "MLPLATFORM_CREDENTIALS_URL or JUPYTERHUB_API_TOKEN is not set" in result.stderr, result.stderr


def test_the_servers_path_has_the_venv_once():
    venv = str(VENV_BIN)
    assert server_path("/usr/bin:/bin") == f"{venv}{os.pathsep}/usr/bin:/bin"
    assert server_path(f"/usr/bin:{venv}:/bin") == f"/usr/bin:{venv}:/bin"
    assert server_path(None) == venv and server_path("") == venv
    assert VENV_BIN == Path(sys.executable).parent


def test_the_local_server_gets_the_venv_on_path_and_a_terminal_that_is_no_login_shell(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a hub started as `.venv/bin/jupyterhub`, no venv activated
    alice = LocalPlatformSpawner(user=User("alice"), hub=Hub(), log=logging.getLogger("test-spawner"))
    assert alice.get_env()["PATH"] == server_path("/usr/bin:/bin")
    assert TERMINAL_SHELL_ARG in alice.get_args()
    assert TERMINAL_SHELL_ARG == "--ServerApp.terminado_settings=shell_command=/bin/bash"
