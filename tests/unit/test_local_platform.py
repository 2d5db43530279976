"""The local platform's launcher without starting it: which component's environment gets which
secret, the Ray root handed to notebooks, and the data directory made private before anything starts
(the running platform: tests/integration/test_launcher.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hub_config.local import git_server
from hub_config.local.platform import LocalPlatform, PlatformError, Ports

BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 4450  # only the hub port is bound, briefly


@pytest.fixture
def local(tmp_path, monkeypatch):
    ports = Ports(hub=BASE, sso=BASE + 80, mlflow=BASE + 90, s3=BASE + 100)
    # The catalog reads its ports from the environment, as `mlplatform-local up` sets them.
    for name, port in (("SSO", ports.sso), ("MLFLOW", ports.mlflow), ("S3", ports.s3)):
        monkeypatch.setenv(f"MLPLATFORM_{name}_PORT", str(port))
    for name in ("OAUTH_CLIENT_SECRET", "JUPYTERHUB_CRYPT_KEY"):
        monkeypatch.delenv(name, raising=False)
    platform = LocalPlatform(data_dir=tmp_path / "data", ports=ports)
    platform.data_dir.mkdir(mode=0o700)
    return platform


def secrets_in(env: dict[str, str], secrets: dict[str, str]) -> dict[str, list[str]]:
    """{secret's name: the variables holding it}."""
    return {name: sorted(k for k, v in env.items() if value in v) for name, value in secrets.items()
            if any(value in v for v in env.values())}


def test_each_secret_goes_only_to_the_component_that_uses_it(local):
    _, hub = local._hub_command()
    secrets = json.loads((local.data_dir / "secrets.json").read_text())
    # The hub hands the platform service's S3 keys to the service alone (jupyterhub_config.py).
    assert secrets_in(hub, secrets) == {"client_secret": ["OAUTH_CLIENT_SECRET"], "crypt_key": ["JUPYTERHUB_CRYPT_KEY"],
                                        "s3_service_access_key": ["MLPLATFORM_SERVICE_S3_KEYS"],
                                        "s3_service_secret_key": ["MLPLATFORM_SERVICE_S3_KEYS"],
                                        "gitops_token": ["MLPLATFORM_SERVICE_GITOPS_CREDENTIALS"]}
    assert secrets_in(local._sso_command()[1], secrets) == {"client_secret": ["SSO_CLIENT_SECRET"]}
    assert secrets_in(local._mlflow_command()[1], secrets) == {}
    assert secrets_in(local._s3_command()[1], secrets) == {}  # SeaweedFS reads its keys from 0600 files
    assert secrets_in(local._git_command()[1], secrets) == {}  # the Git server knows the GitOps token's digest
    assert secrets_in(local.env(), secrets) == {}


def test_notebooks_get_the_ray_root_in_the_data_directory(local):
    _, hub = local._hub_command()
    assert (hub["MLPLATFORM_RAY_DIR"], hub["MLPLATFORM_RAY_PORT"]) == (str(local.data_dir / "ray"), str(BASE + 600))


def test_the_git_server_is_a_component_with_the_gitops_repository(local):
    """Its port follows the hub's (checked free before anything starts); the repository has its first commit on
    main; the server accepts the platform's GitOps credential, whose token is kept with the other secrets."""
    assert local.ports.git == BASE + 83 and local.ports.all()["Git server (hub + 83)"] == BASE + 83
    assert local.gitops_url == f"http://127.0.0.1:{BASE + 83}/platform/gitops.git"
    cmd, env = local._git_command()
    assert cmd[1:] == ["-m", "hub_config.local.git_server", f"--root={local.data_dir / 'git'}", f"--port={BASE + 83}"]
    user, token = local.gitops_credentials()
    assert (user, token) == ("mlplatform", json.loads((local.data_dir / "secrets.json").read_text())["gitops_token"])
    assert env["MLPLATFORM_GIT_USERS"] == f"mlplatform:{git_server.token_digest(token)}"
    assert env["MLPLATFORM_GIT_PORT"] == local.env()["MLPLATFORM_GIT_PORT"] == str(BASE + 83)
    bare = local.data_dir / "git" / "platform" / "gitops.git"
    log = subprocess.run(["git", f"--git-dir={bare}", "log", "--format=%an <%ae>|%s", "main"], capture_output=True,
                         text=True, check=True).stdout
    assert log == "mlplatform <mlplatform@mlplatform.local>|The platform's GitOps repository\n"
    head = subprocess.run(["git", f"--git-dir={bare}", "rev-parse", "main"], capture_output=True, text=True).stdout
    local._git_command()  # a second start keeps the repository as it is
    assert subprocess.run(["git", f"--git-dir={bare}", "rev-parse", "main"], capture_output=True, text=True).stdout == head


def busy(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_the_data_directory_is_made_private_before_anything_starts(local):
    local.data_dir.chmod(0o755)  # as an older version left it
    with busy(local.ports.hub), pytest.raises(PlatformError, match=f"port {local.ports.hub} \\(hub\\) is already in use"):
        local.start()
    assert local.data_dir.stat().st_mode & 0o777 == 0o700
    assert local.processes == {}


def test_a_new_data_directory_is_private(local, tmp_path):
    fresh = LocalPlatform(data_dir=tmp_path / "new" / "data", ports=local.ports)
    old = os.umask(0)
    try:
        with busy(local.ports.hub), pytest.raises(PlatformError):
            fresh.start()
    finally:
        os.umask(old)
    assert fresh.data_dir.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's needs root")
def test_another_users_data_directory_is_refused(local):
    os.chown(local.data_dir, 65534, 65534)
    with busy(local.ports.hub), pytest.raises(PlatformError) as info:  # (a check after it would stop start())
        local.start()
    assert str(info.value) == (f"the data directory {local.data_dir} belongs to uid 65534, not to this user (uid 0); "
                               "choose a directory of your own with --data-dir")
    assert local.processes == {} and not (local.data_dir / "logs").exists()


def test_stop_removes_the_ray_heads_directory_in_tmp(local):
    """The Ray head's sockets and session files under /tmp (the data directory's path is too long for
    unix sockets) go with the platform, head or no head; the records under the data directory stay."""
    runtime = Path(f"/tmp/mlp-ray-{local.ports.ray}")
    assert len(str(local.ray_dir)) > 25  # pytest's temporary paths: the runtime directory is in /tmp
    shutil.rmtree(runtime, ignore_errors=True)
    try:
        (runtime / "ray" / "session_latest" / "sockets").mkdir(parents=True)
        runtime.chmod(0o700)
        local.ray_dir.mkdir(mode=0o700)
        (local.ray_dir / "apps").mkdir()
        local.stop()
        assert not runtime.exists() and (local.ray_dir / "apps").is_dir()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_components_start_with_sigint_not_ignored_even_when_the_launcher_ignores_it():
    """JupyterHub stops its managed services with SIGINT first: a service that inherited an ignored SIGINT (a
    background job of a script ignores it) held the hub's shutdown past stop()'s timeout, and the killed hub
    left its proxy and services running."""
    import signal
    import subprocess
    import sys

    from hub_config.local.platform import _sigint_not_ignored

    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "True"
        with _sigint_not_ignored():
            assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "False"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the launcher's own setting is back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_stopping_a_killed_hub_stops_the_proxy_and_services_it_started_in_sessions_of_their_own(local):
    """JupyterHub starts configurable-http-proxy and its managed services with start_new_session: a hub that has to be
    killed leaves them holding their ports unless stop_component finds them (the proxy by its pid file, a service by
    this hub's API URL in its environment; another platform's service is left alone)."""
    pid_file = local.data_dir / "proxy.pid"
    hub = subprocess.Popen(["bash", "-c", f'setsid bash -c "exec -a configurable-http-proxy sleep 300" & '
                                          f'echo $! > {pid_file}; exec sleep 300'], start_new_session=True)
    service, other = (subprocess.Popen(["sleep", "300"], start_new_session=True, env={
        **os.environ, "JUPYTERHUB_API_URL": f"http://127.0.0.1:{port}/hub/api"}) for port in (local.ports.hub_api, 1))
    deadline = time.monotonic() + 10
    while not _proxy_named(pid_file) and time.monotonic() < deadline:  # bash has exec'd it
        time.sleep(0.05)
    proxy = int(pid_file.read_text())
    assert os.getsid(proxy) != os.getsid(hub.pid)  # out of the hub's process group: its SIGKILL misses it

    local.processes["hub"] = hub
    try:
        local.stop_component("hub", timeout=1)
        assert service.wait(10) == -9 and other.poll() is None
        deadline = time.monotonic() + 10
        while _alive(proxy) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(proxy) and not pid_file.exists()
    finally:
        for left in (service, other):
            left.kill()
            left.wait()


def _proxy_named(pid_file: Path) -> bool:
    try:
        return Path(f"/proc/{int(pid_file.read_text())}/cmdline").read_bytes().startswith(b"configurable-http-proxy")
    except (OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (init reaps the orphaned proxy)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
