"""The local platform: the dev OIDC provider, MLflow, SeaweedFS (S3 + STS), a Git server (the GitOps
repository) and JupyterHub as real processes on loopback.

`LocalPlatform` starts each component, waits until it answers, and stops them all (every process
group it started, then the Spark jobs and the Ray head that notebooks started) on `stop()`.
`mlplatform-local up` runs one in the foreground; the test suite starts one per session with its
own ports and data directory.

Data directory layout (mode 0700: only the platform's OS user may enter it):
    secrets.json        client secret, auth_state key, S3 admin keys, STS signing key (0600), made on first start
    logs/<name>.log     each component's output
    sso/                the provider's signing keys (kept across restarts)
    mlflow/             MLflow's SQLite stores (tracking, auth), artifacts, auth.ini, keys/ (see mlflow.py)
    s3/                 SeaweedFS's iam.json and s3.json (0600, rewritten at each start) and data/
    git/platform/gitops.git   the GitOps repository (bare; served by git_server.py, made with a first commit)
    home/<user>/        notebook users' homes (local Spark jobs in home/<user>/.mlplatform/spark)
    ray/                the local Ray head's records (MLPLATFORM_RAY_DIR of every notebook; its sockets
                        are in /tmp/mlp-ray-<port> when this path is too long for them)
    jupyterhub.sqlite   the hub's database

Each secret goes only to the component that uses it: the hub gets the OIDC client secret, the
auth_state key and the path of its MLflow signing key (and hands the platform service its S3 keys and
GitOps credential), the provider the client secret; MLflow gets
its auth app's random admin password and Flask secret; SeaweedFS reads its keys from its 0600
config files; the Git server gets only the digest of the GitOps token (the platform service commits with it).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import requests
from mlplatform_core.catalog import Catalog, load_catalog
from mlplatform_core.contract import variable
from mlplatform_core.files import write_json

from ..catalog import DEFAULT_CATALOG
from . import git_server, mlflow, seaweedfs

HERE = Path(__file__).parent
REPO = HERE.parent.parent
REALM_FILE = HERE / "realm.json"
BIN = Path(sys.executable).parent
# Who the caller is to MLflow stays with the caller: no component acts with it.
CALLERS_MLFLOW_IDENTITY = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                           variable("mlflow_tracking_auth"), variable("mlflow_workspace"))


# The platform service's S3 keys, "<access key>:<secret key>", for the hub to hand to the service alone.
SERVICE_S3_KEYS = "MLPLATFORM_SERVICE_S3_KEYS"
# The platform service's GitOps credential, "<user>:<token>", likewise (mlplatform_service.gitops reads it).
SERVICE_GITOPS_CREDENTIALS = "MLPLATFORM_SERVICE_GITOPS_CREDENTIALS"


class PlatformError(RuntimeError):
    pass


SECRETS = {
    "client_secret": lambda: secrets.token_urlsafe(32),
    "crypt_key": lambda: secrets.token_hex(32),
    # The S3 server's static admin identity (bucket creation only) and the key signing STS session tokens.
    "s3_access_key": lambda: secrets.token_hex(10).upper(),
    "s3_secret_key": lambda: secrets.token_urlsafe(30),
    "s3_sts_signing_key": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
    # The platform service's S3 identity: reads the teams' inference logs (the rollout controller).
    "s3_service_access_key": lambda: secrets.token_hex(10).upper(),
    "s3_service_secret_key": lambda: secrets.token_urlsafe(30),
    # The platform's credential for its GitOps repository (user GITOPS_USER): the Git server knows its digest.
    "gitops_token": lambda: secrets.token_urlsafe(32),
}
GITOPS_USER = "mlplatform"
# Who made the GitOps repository's first commit (and commits users' changes, unless the catalog names another).
GITOPS_IDENTITY = ("mlplatform", "mlplatform@mlplatform.local")
GITOPS_README = """# The platform's GitOps repository

What users deploy from their notebooks, one file per object, committed by the platform service
(author: the user; committer: the platform). Argo CD syncs each team's directory into the team's
namespace. Changes made here by hand are synced too: review them as you would code.
"""


@dataclass
class Ports:
    """Every port the local platform listens on (all on 127.0.0.1). Defaults avoid 8000 and 5000."""

    hub: int = 18000
    sso: int = 18080
    mlflow: int = 18500
    # S3 + STS; SeaweedFS's internal ports are s3 + 1 .. s3 + 7 (see seaweedfs.py). Unset: hub + 300
    # (18300), so platforms started with different hub ports (test sessions) never share it.
    s3: int | None = None

    # Ray head that notebooks start on first deploy (mlplatform.serving.local): ray .. ray + 199.
    ray: int | None = None

    def __post_init__(self):
        if self.s3 is None:
            self.s3 = self.hub + 300
        if self.ray is None:
            self.ray = self.hub + 600

    @property
    def proxy_api(self) -> int:
        return self.hub + 1

    @property
    def hub_api(self) -> int:
        return self.hub + 81

    @property
    def service(self) -> int:
        """The platform service (started by the hub)."""
        return self.hub + 82

    @property
    def git(self) -> int:
        """The Git server of the GitOps repository."""
        return self.hub + 83

    def all(self) -> dict[str, int]:
        return {"hub": self.hub, "proxy API (hub + 1)": self.proxy_api, "hub API (hub + 81)": self.hub_api,
                "platform service (hub + 82)": self.service, "Git server (hub + 83)": self.git,
                "sso": self.sso, "mlflow": self.mlflow,
                **{name if name == "s3" else f"S3 server's {name} (s3 + {port - self.s3})": port
                   for name, port in seaweedfs.ports(self.s3).items()}}


@dataclass
class LocalPlatform:
    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    catalog: Path | None = None
    node_modules: Path = REPO / "node_modules"
    # Shorter lifetimes let tests see refresh; Keycloak's default is 300 s.
    access_token_ttl: int = 300
    id_token_ttl: int = 300
    extra_env: dict[str, str] = field(default_factory=dict)
    # Hub settings given on its command line, which wins over jupyterhub_config.py (`{"Class.trait": value}`).
    hub_options: dict[str, object] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Seconds from start() until each component answered (bench/startup.py reports them).
    ready_after: dict[str, float] = field(default_factory=dict)
    # `mlplatform-ray-head start` running in the background (start_ray_head), until the head answers.
    ray_head_start: subprocess.Popen | None = None

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.hub}"

    @property
    def realm_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sso}/realms/platform"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow}"

    @property
    def s3_url(self) -> str:
        """S3 API and STS (AssumeRoleWithWebIdentity) on one port."""
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def gitops_url(self) -> str:
        """The GitOps repository's clone URL (HTTP Basic: GITOPS_USER and `gitops_credentials()`)."""
        return f"http://127.0.0.1:{self.ports.git}/platform/gitops.git"

    def gitops_credentials(self) -> tuple[str, str]:
        """(user, token) of the platform's GitOps credential: for the platform service alone."""
        return GITOPS_USER, self._secrets()["gitops_token"]

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def ray_dir(self) -> Path:
        """The local Ray head's root (the notebook side's `LocalRayConfig`), private like the rest."""
        return self.data_dir / "ray"

    def demo_users(self) -> list[dict]:
        return json.loads(REALM_FILE.read_text())["users"]

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self._private_data_dir()
        self.logs.mkdir(exist_ok=True)
        self._check_ports()
        self._check_node()
        started = time.monotonic()
        try:
            # MLflow is the slowest and needs nothing else: it starts alongside the provider and the hub.
            self._spawn("mlflow", *self._mlflow_command())
            self._spawn("git", *self._git_command())
            # SeaweedFS fetches the provider's keys only when it validates the first token: no need to wait.
            self._spawn("s3", *self._s3_command())
            self._spawn("sso", *self._sso_command())
            self._ready("sso", started)
            # The hub reads the realm's discovery document when it starts: after the provider.
            self._spawn("hub", *self._hub_command())
            for name in ("git", "hub", "s3", "mlflow"):
                self._ready(name, started)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 20) -> None:
        """Stop every component, newest first; then what notebooks started in sessions of their own:
        every local Spark job of the platform's users (they may hold GPUs the hub has just released)
        and the Ray head, whose folder in /tmp (its sockets, when `ray/` is too long a path) goes too."""
        for name in reversed(list(self.processes)):
            self.stop_component(name, timeout)
        if self.ray_head_start is not None and self.ray_head_start.poll() is None:
            self.ray_head_start.kill()  # still waiting for the head: the head's own stop below ends it
            self.ray_head_start.wait()
        self._notebook_command("mlplatform.spark.local_cli", "stop-all", f"--homes={self.data_dir / 'home'}")
        self._notebook_command("mlplatform.serving.head_cli", "stop", f"--port={self.ports.ray}")

    def start_ray_head(self) -> bool:
        """Start the Ray head of model serving in the background (the head outlives this command, in a
        session of its own), so a user's first deploy does not wait the ~15 s of its start. False in a
        hub-only install, which serves no models."""
        if importlib.util.find_spec("mlplatform") is None:
            return False
        log = open(self.logs / "ray-head-start.log", "ab")
        try:
            self.ray_head_start = subprocess.Popen(
                [sys.executable, "-m", "mlplatform.serving.head_cli", "start", f"--port={self.ports.ray}"],
                env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        return True

    def _notebook_command(self, module: str, *args: str) -> None:
        """Run a command of the notebook package, a subprocess: the hub side does not import it. Skipped
        in a hub-only install (the package is missing, and so is anything it could have started)."""
        if importlib.util.find_spec(module.partition(".")[0]) is None:
            return
        try:  # its errors reach the launcher's stderr
            subprocess.run([sys.executable, "-m", module, *args], env=self.env(), stdout=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL, timeout=120, check=False)
        except subprocess.TimeoutExpired:  # the rest of stop() still runs
            print(f"mlplatform-local: `python -m {module} {' '.join(args)}` did not finish within 120 s",
                  file=sys.stderr, flush=True)

    def stop_component(self, name: str, timeout: float = 20) -> None:
        """Stop one component: SIGTERM to its process group, SIGKILL after `timeout`.

        SeaweedFS gets SIGKILL at once (its graceful stop takes ~26 s: a 15 s gRPC drain, then 10 s
        of volume pre-stop), then its sockets in /tmp are removed."""
        proc = self.processes.pop(name)
        if proc.poll() is None and name == "s3":
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        elif proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        # Children that outlived their parent (a notebook server) go too.
        _signal_group(proc, signal.SIGKILL)
        if name == "hub":
            stop_hub_orphans(self.data_dir / "proxy.pid", self.ports.hub_api)
        if name == "s3":
            seaweedfs.remove_sockets(self.ports.s3)

    def start_component(self, name: str) -> None:
        """Start one stopped component again and wait until it answers (tests simulate outages)."""
        started = time.monotonic()
        commands = {"mlflow": self._mlflow_command, "s3": self._s3_command, "sso": self._sso_command,
                    "hub": self._hub_command, "git": self._git_command}
        self._spawn(name, *commands[name]())
        self._ready(name, started)

    def _ready(self, name: str, started: float) -> None:
        url, timeout = {"sso": (f"{self.realm_url}/.well-known/openid-configuration", 30),
                        "hub": (f"{self.hub_url}/hub/api", 90),
                        "s3": (f"{self.s3_url}/healthz", 60),
                        "mlflow": (f"{self.mlflow_url}/health", 120),
                        "git": (f"http://127.0.0.1:{self.ports.git}/healthz", 10)}[name]
        self._wait_ready(name, url, timeout, started)
        if name == "s3":
            self._ensure_bucket(started)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- components ---------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment every component gets: ports and paths, no secret (see `_hub_command`)."""
        return {
            **{k: v for k, v in os.environ.items() if k not in CALLERS_MLFLOW_IDENTITY},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLPLATFORM_DATA_DIR": str(self.data_dir),
            "MLPLATFORM_HUB_PORT": str(self.ports.hub),
            "MLPLATFORM_SSO_PORT": str(self.ports.sso),
            "MLPLATFORM_MLFLOW_PORT": str(self.ports.mlflow),
            "MLPLATFORM_S3_PORT": str(self.ports.s3),
            "MLPLATFORM_RAY_PORT": str(self.ports.ray),
            "MLPLATFORM_RAY_DIR": str(self.ray_dir),  # the spawner hands both to notebooks
            "MLPLATFORM_PROXY_API_PORT": str(self.ports.proxy_api),
            "MLPLATFORM_HUB_API_PORT": str(self.ports.hub_api),
            "MLPLATFORM_SERVICE_PORT": str(self.ports.service),
            "MLPLATFORM_GIT_PORT": str(self.ports.git),
            "MLPLATFORM_CHP": str(self.node_modules / ".bin" / "configurable-http-proxy"),
            **({variable("catalog_path"): str(Path(self.catalog).resolve())} if self.catalog else {}),
            **self.extra_env,
        }

    def _sso_command(self) -> tuple[list[str], dict]:
        env = {
            **self.env(),
            "SSO_HOST": "127.0.0.1",
            "SSO_PORT": str(self.ports.sso),
            "SSO_REALM_FILE": str(REALM_FILE),
            "SSO_HUB_URL": self.hub_url,
            "SSO_CLIENT_SECRET": self._secrets()["client_secret"],
            "SSO_STATE_DIR": str(self.data_dir / "sso"),
            "SSO_ACCESS_TOKEN_TTL": str(self.access_token_ttl),
            "SSO_ID_TOKEN_TTL": str(self.id_token_ttl),
        }
        return ["node", str(HERE / "sso_provider.mjs")], env

    def _mlflow_command(self) -> tuple[list[str], dict]:
        cmd, env = mlflow.command(self.load_catalog(), self.mlflow_store, mlflow=BIN / "mlflow", port=self.ports.mlflow,
                                  hub_url=self.hub_url)
        return cmd, {**self.env(), **env}

    @property
    def mlflow_store(self) -> Path:
        return self.data_dir / "mlflow"

    def mlflow_signing_key(self) -> Path:
        """The key the hub signs MLflow tokens with (tests mint the platform identity's tokens with it)."""
        return mlflow.signing_key(self.mlflow_store)

    def load_catalog(self) -> Catalog:
        """The platform's catalog, with the ports of this platform."""
        return load_catalog(self.catalog or DEFAULT_CATALOG, environ=self.env())

    def _s3_command(self) -> tuple[list[str], dict]:
        config_dir = self.data_dir / "s3"
        seaweedfs.remove_sockets(self.ports.s3)  # left behind if an earlier run was killed
        seaweedfs.write_config(config_dir, self.load_catalog(), self._secrets())
        (config_dir / "data").mkdir(exist_ok=True)
        # Only the plain environment: SeaweedFS needs none of the platform's secrets there.
        return seaweedfs.weed_command(BIN / "weed", config_dir, self.ports.s3), dict(os.environ)

    def _ensure_bucket(self, started: float) -> None:
        s3 = self.load_catalog().storage.s3
        try:
            seaweedfs.ensure_bucket(self.s3_url, s3.region, s3.bucket, self._secrets(), timeout=30)
        except RuntimeError as e:
            raise PlatformError(f"{e}; the S3 server's log: {self.logs / 's3.log'}\n{self.log_tail('s3')}") from None
        self.ready_after["s3"] = time.monotonic() - started

    def _git_command(self) -> tuple[list[str], dict]:
        root = self.data_dir / "git"
        git_server.init_repository(root / "platform" / "gitops.git", files={"README.md": GITOPS_README},
                                   committer=GITOPS_IDENTITY, message="The platform's GitOps repository")
        user, token = self.gitops_credentials()
        cmd, env = git_server.command(root, self.ports.git, {user: token}, python=sys.executable)
        return cmd, {**self.env(), **env}

    def _hub_command(self) -> tuple[list[str], dict]:
        s = self._secrets()
        # The only component that needs them: OAuth with the provider, and auth_state encryption.
        env = {**self.env(), "OAUTH_CLIENT_SECRET": s["client_secret"], "JUPYTERHUB_CRYPT_KEY": s["crypt_key"],
               "MLPLATFORM_MLFLOW_SIGNING_KEY": str(self.mlflow_signing_key()),
               SERVICE_S3_KEYS: f"{s['s3_service_access_key']}:{s['s3_service_secret_key']}",
               SERVICE_GITOPS_CREDENTIALS: ":".join(self.gitops_credentials())}
        options = [f"--{name}={value}" for name, value in self.hub_options.items()]
        return [str(BIN / "jupyterhub"), "-f", str(HERE.parent / "jupyterhub_config.py"), *options], env

    # --- helpers ------------------------------------------------------------------------------
    def _secrets(self) -> dict[str, str]:
        """The generated secrets; ones missing (a data directory from an older version) are added."""
        path = self.data_dir / "secrets.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        missing = {name: make() for name, make in SECRETS.items() if name not in values}
        if missing:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {**values, **missing})  # 0600
            values = {**values, **missing}
        return values

    def _private_data_dir(self) -> None:
        """The data directory, 0700: it holds the hub's database, the secrets, logs, MLflow's store, S3's
        data and the homes. One made by an older version (0755) is closed; another user's is refused."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.data_dir.stat()
        if st.st_uid != os.geteuid():
            raise PlatformError(f"the data directory {self.data_dir} belongs to uid {st.st_uid}, not to this user "
                                f"(uid {os.geteuid()}); choose a directory of your own with --data-dir")
        if st.st_mode & 0o077:
            self.data_dir.chmod(0o700)

    def _spawn(self, name: str, cmd: list[str], env: dict) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        # A process group per component, so stop() also reaches the processes it starts.
        with _sigint_not_ignored():
            self.processes[name] = subprocess.Popen(cmd, env=env, cwd=self.data_dir, stdout=log,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    start_new_session=True)
        log.close()

    def _wait_ready(self, name: str, url: str, timeout: float, started: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self.processes[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PlatformError(f"{name} exited with code {proc.returncode} while starting; "
                                    f"its log: {self.logs / (name + '.log')}\n{self.log_tail(name)}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    self.ready_after[name] = time.monotonic() - started
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise PlatformError(f"{name} did not answer {url} within {timeout:.0f} s; "
                            f"its log: {self.logs / (name + '.log')}\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _check_ports(self) -> None:
        for name, port in self.ports.all().items():
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise PlatformError(f"port {port} ({name}) is already in use on 127.0.0.1; "
                                        "choose other ports (mlplatform-local up --help)") from None

    def _check_node(self) -> None:
        if not shutil.which("node"):
            raise PlatformError("Node.js is needed for the proxy and the dev OIDC provider: install nodejs (>= 20)")
        if not (self.node_modules / ".bin" / "configurable-http-proxy").exists():
            raise PlatformError(f"npm packages are missing in {self.node_modules}: run `npm ci` in {REPO} "
                                "(scripts/install does it)")


def stop_hub_orphans(pid_file: Path, hub_api_port: int) -> None:
    """JupyterHub starts configurable-http-proxy, its managed services (the idle culler, the platform service) and
    local notebook servers in sessions of their own, and stops them when it exits cleanly; a hub killed (SIGKILL after
    the stop's timeout, or a crash) leaves them running and holding their ports. The proxy is found by its pid file
    (c.ConfigurableHTTPProxy.pid_file; killed if that process is still the proxy), the others by this hub's API URL
    in their environment (JUPYTERHUB_API_URL: another platform's processes have another port)."""
    with suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
        if b"configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    marker = f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub_api_port}/".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with suppress(OSError):  # gone meanwhile, or another user's
            if any(entry.startswith(marker) for entry in (proc / "environ").read_bytes().split(b"\0")):
                os.kill(int(proc.name), signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def _sigint_not_ignored():
    """Components start with SIGINT's default action even when this process ignores it (a background job
    of a script does; an ignored signal stays ignored across exec): JupyterHub stops its managed services
    and servers with SIGINT first, and one that ignored it would hold the hub's shutdown past stop()'s
    timeout, so the hub would be killed before it stopped its proxy and services. A handled signal is reset
    to its default by exec, so a handler in place while the child is made is enough."""
    try:
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: nothing can be changed here
        ignored = False
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
