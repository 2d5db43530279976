"""The local Ray head of model serving: its ports, directories, start, stop and readiness.

`ray start --head` (no --block: it starts the head's processes and exits, see LAUNCHER) in a process
group of its own, which the head's processes keep (the group is the head: head.json's pgid), with its own
temporary directory and fixed loopback ports; see local.py's docstring for the files under its root and
who may use them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests
from mlplatform_core.timestamps import now

from .. import localhost
from .errors import BackendUnavailable
from .gateway import Gateway, GatewayError, GatewaySpec

HEAD_MARKER_VAR = "MLPLATFORM_RAY_HEAD"  # in the environment of every process of the head, to find them all
# What the head keeps of the environment of the kernel that starts it: no user's identity or token.
HEAD_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")
# The longest root that can hold Ray's and HAProxy's unix sockets (see the module docstring).
MAX_RUNTIME_DIR = 25
# Ray's dashboard is off: Serve's REST API, all local.py uses of it, is served by a thread of Serve's own
# controller (serve_api.py; ~0.5 GB RSS less than the dashboard with only its Serve module). For its UI (nodes, jobs,
# logs, metrics), MLPLATFORM_RAY_DASHBOARD_MODULES=all starts Ray's dashboard with all its modules (~1.2 GB
# RSS, 9 processes, measured 2026-12-03), or a comma-separated list of module class names; Serve's module
# then serves the REST API on the same port instead.
DASHBOARD_MODULES = ""
# Serve's controller calls serve_api.serve_from_controller as it starts; the API's port for it.
SERVE_API_CALLBACK = "mlplatform.serving.serve_api.serve_from_controller"
SERVE_API_PORT_VAR = "MLPLATFORM_SERVE_API_PORT"

# `ray start` with three changes, made in this process before the head's processes start (Ray 2.60 has
# no option for any): no dashboard process unless asked for (`--include-dashboard=false` still starts one,
# ~170 MB RSS, for modules nothing here uses; without it Ray runs as when its dashboard fails to start);
# a dashboard loads only the modules asked for (--modules-to-load, an option of dashboard.py that
# `ray start` does not pass on); and no Ray Client server starts (`ray start` starts one whatever is
# said, ~90 MB RSS; nothing here is a Ray Client: applications go through the REST API).
# Without --block, `ray start` exits once the head runs: the waiting process (~210 MB RSS) is gone.
LAUNCHER = """
import sys
from ray._private import node, ray_constants, services
dashboard, modules = {dashboard!r}, {modules!r}
if not dashboard:
    services.start_api_server = lambda *args, **kwargs: (None, None)
start_ray_process = services.start_ray_process
def start_lean(command, process_type, *args, **kwargs):
    if process_type == ray_constants.PROCESS_TYPE_DASHBOARD and modules:
        command = [*command, "--modules-to-load=" + modules]
    return start_ray_process(command, process_type, *args, **kwargs)
services.start_ray_process = start_lean
node.Node.start_ray_client_server = lambda self: None
sys.argv[0] = "ray"
from ray.scripts.scripts import main
main()
"""

# Run by _start_serve once `ray start` exits: Serve starts, and its controller serves the REST API.
SERVE_LAUNCHER = """
import json, sys
from mlplatform.serving.serve_api import start_serve
start_serve(**json.loads(sys.argv[1]))
"""


@dataclass(frozen=True)
class LocalRayConfig:
    """Where the local head listens and lives. Every port is on 127.0.0.1 and derived from `port`:

        port       GCS                      port + 1   Serve's REST API (serve_api.py, or Ray's dashboard)
        port + 2   the endpoints: the rollout gateway (gateway.py) in front of Serve's HTTP
        port + 3 .. port + 13   Ray's and HAProxy's own ports   port + 14   Serve's HTTP
        port + 20 .. port + 119   Ray workers   port + 120 .. port + 199   replicas' direct ingress
    """

    port: int = 18600
    root: Path | None = None
    num_cpus: int | None = None  # logical CPUs of the head; unset: 4 per core (a served model mostly waits)
    num_gpus: int | None = None  # unset: Ray counts the machine's GPUs
    object_store_bytes: int = 200 * 2**20
    fast_ingress: bool = True  # HAProxy in front of the replicas (Ray 2.60 feature flags, NOTES)
    start_timeout: float = 120.0
    dashboard_modules: str = DASHBOARD_MODULES  # "": no Ray dashboard; "all": all its modules; or a list

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LocalRayConfig:
        """MLPLATFORM_RAY_PORT, MLPLATFORM_RAY_DIR, MLPLATFORM_RAY_NUM_CPUS, MLPLATFORM_RAY_NUM_GPUS,
        MLPLATFORM_RAY_FAST_INGRESS (0 turns the HAProxy ingress off), MLPLATFORM_RAY_DASHBOARD_MODULES."""
        env = os.environ if environ is None else environ
        return cls(port=int(env.get("MLPLATFORM_RAY_PORT") or cls.port),
                   root=Path(env["MLPLATFORM_RAY_DIR"]) if env.get("MLPLATFORM_RAY_DIR") else None,
                   num_cpus=int(env["MLPLATFORM_RAY_NUM_CPUS"]) if env.get("MLPLATFORM_RAY_NUM_CPUS") else None,
                   num_gpus=int(env["MLPLATFORM_RAY_NUM_GPUS"]) if env.get("MLPLATFORM_RAY_NUM_GPUS") else None,
                   fast_ingress=env.get("MLPLATFORM_RAY_FAST_INGRESS", "1") != "0",
                   dashboard_modules=env.get("MLPLATFORM_RAY_DASHBOARD_MODULES", DASHBOARD_MODULES))

    @property
    def directory(self) -> Path:
        """The root: the head's and the applications' records."""
        return Path(self.root) if self.root else Path(f"/tmp/mlp-ray-{self.port}")

    @property
    def runtime_directory(self) -> Path:
        """Ray's temporary directory (sessions, logs, sockets) and HAProxy's: the root if short enough
        for their socket paths, else a short one of the port's."""
        short = Path(f"/tmp/mlp-ray-{self.port}")
        return self.directory if len(str(self.directory)) <= MAX_RUNTIME_DIR else short

    @property
    def ray_directory(self) -> Path:
        """Ray's `--temp-dir`."""
        return self.runtime_directory / "ray"

    @property
    def haproxy_directory(self) -> Path:
        """HAProxy's files; Serve adds a 56-character node id below, and HAProxy's socket paths may
        have at most 97 characters."""
        return self.runtime_directory / "hap"

    @property
    def gateway_directory(self) -> Path:
        """The rollout gateway's configuration, traffic map and admin socket."""
        return self.runtime_directory / "gateway"

    @property
    def evidence_socket(self) -> Path:
        """Where the gateway sends its evidence: the platform service's shipper listens there (evidence.py)."""
        return self.runtime_directory / "evidence.sock"

    @property
    def ray_dashboard(self) -> bool:
        """Whether Ray's dashboard runs (and serves Serve's REST API) rather than Serve's controller (serve_api.py)."""
        return bool(self.dashboard_modules)

    @property
    def dashboard_port(self) -> int:
        return self.port + 1

    @property
    def http_port(self) -> int:
        """The endpoints' port: the gateway's."""
        return self.port + 2

    @property
    def serve_port(self) -> int:
        """Serve's HTTP port, behind the gateway."""
        return self.port + 14

    @property
    def cpus(self) -> int:
        return self.num_cpus or 4 * (os.cpu_count() or 1)

    @property
    def gpus(self) -> int:
        """GPUs of the head: `num_gpus`, else this machine's NVIDIA devices, all of which Ray sees (the
        head does not inherit the starting kernel's CUDA_VISIBLE_DEVICES)."""
        if self.num_gpus is not None:
            return self.num_gpus
        return len(list(Path("/dev").glob("nvidia[0-9]*")))

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"


class LocalRayHead:
    """Start, find and stop the local Ray head."""

    def __init__(self, config: LocalRayConfig):
        self.config = config
        self.root = config.directory
        self.http = requests.Session()

    def private(self, *, create: bool = True) -> None:
        """Check the root and the runtime directory, those that exist: only this user's are used. With
        `create`, the root is made (0700) if missing; the runtime directory is made when the head starts."""
        _private_directory(self.root, create)
        runtime = self.config.runtime_directory
        if runtime != self.root:
            try:
                _private_directory(runtime, False)
            except BackendUnavailable:
                if not self._stale(runtime):
                    raise
                shutil.rmtree(runtime)  # left by a crashed run: made afresh (0700) when the head starts

    def _stale(self, runtime: Path) -> bool:
        """Whether `runtime` is this user's own directory (not a link) that no head uses any more."""
        st = os.lstat(runtime)
        return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not self.processes()
                and not self.running())

    @property
    def token_path(self) -> Path:
        return self.root / "auth_token"

    def session(self) -> requests.Session:
        """An HTTP session for the dashboard, with the head's token."""
        token = self.token_path.read_text().strip() if self.token_path.exists() else ""
        if token and self.http.headers.get("Authorization") != f"Bearer {token}":
            self.http.headers["Authorization"] = f"Bearer {token}"
        return self.http

    def running(self) -> bool:
        try:
            # Serve's module's version route (/api/version is the job module's, not loaded by default).
            return self.session().get(f"{self.config.dashboard_url}/api/ray/version", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def starting(self) -> bool:
        """Another process is starting the head right now."""
        self.private(create=False)
        if not self.root.exists():
            return False
        with open(self.root / "start.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    def ensure(self) -> bool:
        """Start the head unless it runs; True when this call started it."""
        self.private()
        if self.running():
            self.ensure_gateway()
            return False
        with localhost.locked(self.root / "start.lock"):
            if self.running():
                return False
            pgid = self._head_group()
            if pgid and self._wait_ready(pgid, self.config.start_timeout):
                return False  # a start begun by a kernel that has gone since
            self.stop()
            self._start()
            return True

    def _start(self) -> None:
        c = self.config
        self._check_ports()
        _private_directory(c.runtime_directory, True)
        if c.fast_ingress:
            c.haproxy_directory.mkdir(mode=0o700, exist_ok=True)
        if not self.token_path.exists():
            localhost.write_text(self.token_path, secrets.token_hex(32), mode=0o600)
        log = open(self.root / "head.log", "ab")
        try:
            proc = subprocess.Popen(self.command(), env=self.environment(), cwd=self.root, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        # The group outlives `ray start`: GCS, raylet and agents stay in it (workers, actors among them, are the
        # raylet's children, in sessions of their own); stop() signals it, then what carries the marker.
        localhost.write_json(self.root / "head.json", {"pid": proc.pid, "pgid": proc.pid, "port": c.port,
                                              "started_at": now()})
        try:
            code = proc.wait(c.start_timeout)
        except subprocess.TimeoutExpired:
            code = None
        timeout = f"within {c.start_timeout:.0f} s"
        if code != 0:
            what = f"`ray start` exited with code {code}" if code is not None else f"did not start {timeout}"
        elif not c.ray_dashboard and (serve := self._start_serve()) != 0:
            detail = f"exit code {serve}" if serve is not None else timeout
            what = f"did not start Serve and its REST API (serve_api.py; {detail})"
        elif (refused := self._start_gateway()) is not None:
            what = f"did not start its rollout gateway: {refused}"
        elif self._wait_ready(proc.pid, c.start_timeout):
            # `ray start` is gone: head.json's pid becomes the head's GCS server, a process of the group.
            gcs = _group_member(proc.pid, "gcs_server")
            localhost.write_json(self.root / "head.json", {"pid": gcs or proc.pid, "pgid": proc.pid, "port": c.port,
                                                  "started_at": now()})
            return
        else:
            what = f"did not answer on Serve's REST API {timeout}"
        tail = localhost.tail_text(self.root / "head.log")
        self.stop()
        proc.wait()
        raise BackendUnavailable(f"the local Ray head {what}; its log: {self.root / 'head.log'}\n{tail}")

    def _start_serve(self) -> int | None:
        """Start Serve, whose controller serves the REST API (from a Ray driver that exits once Serve runs); the
        driver's exit code."""
        c = self.config
        arguments = {"gcs_address": f"127.0.0.1:{c.port}", "http_port": c.serve_port}
        with open(self.root / "head.log", "ab") as log:
            try:
                return subprocess.run([sys.executable, "-c", SERVE_LAUNCHER, json.dumps(arguments)],
                                      env=self.environment(), cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=c.start_timeout).returncode
            except subprocess.TimeoutExpired:
                return None

    def gateway(self) -> Gateway:
        """The head's rollout gateway: where the endpoints are (`http_port`), in front of Serve's HTTP."""
        c = self.config
        spec = GatewaySpec(listen=("127.0.0.1", c.http_port), upstream=("127.0.0.1", c.serve_port),
                           log_socket=c.evidence_socket)
        return Gateway(c.gateway_directory, spec, environment=self.environment())

    def ensure_gateway(self) -> None:
        """Start the gateway of a running head again if it is gone (killed, crashed): no endpoint answers without it.
        Every deploy (ensure) and every apply of the applications (local.py) asks."""
        gateway = self.gateway()
        if gateway.running():
            return
        with localhost.locked(self.root / "start.lock"):
            if not gateway.running() and (refused := self._start_gateway()) is not None:
                raise BackendUnavailable(f"the local Ray head runs, but its rollout gateway did not start: {refused}")

    def _start_gateway(self) -> str | None:
        """Start the gateway, a process of the head (its marker in HAProxy's environment: stop() ends it), with the
        traffic map as it was (local.py sets it from the records once Serve has them); why not, if it did not."""
        try:
            self.gateway().start()
        except GatewayError as e:
            return str(e)
        return None

    def _wait_ready(self, pgid: int, timeout: float) -> bool:
        """Whether the head (process group `pgid`) answers on Serve's REST API within `timeout` (False
        once the group is gone)."""
        def serve_answers() -> bool:
            try:
                return self.session().get(f"{self.config.dashboard_url}/api/serve/applications/", timeout=5).ok
            except requests.RequestException:
                return False

        return localhost.wait_until(lambda: not localhost.group_alive(pgid) or serve_answers(), timeout,
                                    interval=0.5) and localhost.group_alive(pgid)

    def command(self) -> list[str]:
        c, p = self.config, self.config.port
        modules = "" if c.dashboard_modules in ("", "all") else ",".join(
            sorted({*c.dashboard_modules.split(","), "ServeHead"} - {""}))  # local.py's REST API is Serve's
        cmd = [sys.executable, "-c", LAUNCHER.format(dashboard=c.ray_dashboard, modules=modules)]
        cmd += ["start", "--head", "--disable-usage-stats", "--node-ip-address=127.0.0.1", f"--port={p}"]
        if c.ray_dashboard:
            cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={c.dashboard_port}"]
        else:
            cmd += ["--include-dashboard=false"]
        cmd += [f"--temp-dir={c.ray_directory}", f"--num-cpus={c.cpus}",
                f"--object-store-memory={c.object_store_bytes}",
                f"--ray-client-server-port={p + 3}",  # unused: LAUNCHER starts no Ray Client server
                # Lean, for one machine: no autoscaler monitor or log monitor (nothing here adds nodes or
                # is a Ray driver reading workers' output; every process writes its own log files).
                "--no-monitor", "--include-log-monitor=false",
                f"--node-manager-port={p + 4}", f"--object-manager-port={p + 5}", f"--metrics-export-port={p + 6}",
                f"--dashboard-agent-listen-port={p + 7}", f"--dashboard-agent-grpc-port={p + 8}",
                f"--runtime-env-agent-port={p + 9}", f"--min-worker-port={p + 20}", f"--max-worker-port={p + 119}"]
        if c.num_gpus is not None:
            cmd.append(f"--num-gpus={c.num_gpus}")
        return cmd

    def environment(self) -> dict[str, str]:
        c, p = self.config, self.config.port
        env = {k: os.environ[k] for k in HEAD_ENV if k in os.environ}
        # Replicas find `mlplatform-aws-credentials` (the AWS credential_process) and the venv's tools.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
        env.update({HEAD_MARKER_VAR: str(self.root), "RAY_USAGE_STATS_ENABLED": "0",
                    # Ray listens on every interface for some ports (GCS, raylet, agents): with token
                    # authentication, only holders of the token (a 0600 file here) can use them.
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path),
                    # Serve's fallback proxy ports default to 8500 / 9500.
                    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(p + 12),
                    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(p + 13)})
        if not c.ray_dashboard:
            env.update({"RAY_SERVE_CONTROLLER_CALLBACK_IMPORT_PATH": SERVE_API_CALLBACK,
                        SERVE_API_PORT_VAR: str(c.dashboard_port)})
        if c.fast_ingress:
            haproxy = c.haproxy_directory
            env.update({
                # HAProxy forwards straight to a server inside each replica: no Python proxy on the path.
                "RAY_SERVE_ENABLE_HA_PROXY": "1",
                "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                "RAY_SERVE_HAPROXY_NBTHREAD": "1",
                "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
                # Its files default to /tmp/haproxy-serve, shared by every Ray on the machine.
                "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy / "haproxy.cfg"),
                "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy / "admin.sock"),
                "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy),
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy / "server-state"),
                "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(haproxy / "metrics.sock"),
                "RAY_SERVE_HAPROXY_STATS_PORT": str(p + 10),
                "RAY_SERVE_HAPROXY_METRICS_PORT": str(p + 11),
                "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(p + 120),
                "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(p + 159),
                "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(p + 160),
                "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(p + 199),
                # A stopped replica's port is held back this long (default 30 s per restart).
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
            })
        return env

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the head and every process it started: its process group, then any process still
        carrying its marker variable (identified one by one, never by name)."""
        self.private(create=False)  # never signal what another user's head.json names
        # Found before the kill: one whose parent dies first is no descendant of the head's afterwards, and
        # one exiting (a zombie whose threads still run) no longer shows its environment.
        known = _create_times(self.processes())
        info = localhost.read_json(self.root / "head.json")
        if info:
            localhost.signal_group(info["pgid"], signal.SIGTERM)
            if not localhost.wait_until(lambda: not localhost.group_alive(info["pgid"]), timeout / 2):
                localhost.signal_group(info["pgid"], signal.SIGKILL)
                localhost.wait_until(lambda: not localhost.group_alive(info["pgid"]), timeout / 2)
        def left() -> list[int]:
            return sorted({*self.processes(), *(pid for pid, start in known.items() if localhost.running(pid, start))})

        for pid in left():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        localhost.wait_until(lambda: not left(), timeout)
        (self.root / "head.json").unlink(missing_ok=True)
        runtime = self.config.runtime_directory
        if runtime != self.root and not self.processes():  # the head's sockets and Ray's session files
            shutil.rmtree(runtime, ignore_errors=True)

    def processes(self) -> list[int]:
        """Ids of the live processes belonging to this head: those carrying its marker and their
        descendants (Ray's setproctitle overwrites the start of the environment of its agents and
        dashboard modules, where the marker may be)."""
        found: set[int] = set()
        for pid, start in localhost.tagged(HEAD_MARKER_VAR, str(self.root)).items():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                proc = psutil.Process(pid)
                if proc.create_time() == start:
                    found.add(pid)
                    found.update(child.pid for child in proc.children(recursive=True))
        return sorted(pid for pid in found if localhost.running(pid))

    def _head_group(self) -> int | None:
        info = localhost.read_json(self.root / "head.json")
        return info["pgid"] if info and localhost.group_alive(info["pgid"]) else None

    def _check_ports(self) -> None:
        c = self.config
        for name, port in (("GCS", c.port), ("dashboard", c.dashboard_port), ("endpoints' gateway", c.http_port),
                           ("Serve HTTP", c.serve_port)):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise BackendUnavailable(f"port {port} ({name} of the local Ray head) is in use by another "
                                             "program; set MLPLATFORM_RAY_PORT to a free range of 200 ports") from None

def _create_times(pids: list[int]) -> dict[int, float]:
    times = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times[pid] = psutil.Process(pid).create_time()
    return times


def _group_member(pgid: int, name: str) -> int | None:
    """A live process named `name` in process group `pgid`."""
    for proc in psutil.process_iter(["name"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if proc.info["name"] == name and os.getpgid(proc.pid) == pgid and localhost.running(proc.pid):
                return proc.pid
    return None


def _private_directory(path: Path, create: bool) -> None:
    """localhost.private_directory for the head's directories (if `path` exists, unless `create`)."""
    if create or os.path.lexists(path):
        try:
            localhost.private_directory(path, create=create)
        except localhost.UnsafeDirectory as e:
            raise BackendUnavailable(f"the local Ray head's directory: {e} (MLPLATFORM_RAY_DIR sets the root)"
                                     ) from None
