"""The rollout gateway's evidence shipper: the gateway's log lines (serving/gateway.py, gateway.lua) into the
inference log.

    shipper = EvidenceShipper(socket_path, lambda team: InferenceLog(S3Writer(client, bucket,
                                                                              evidence_prefix("platform", team))))
    shipper.start()          # listens on the unix socket HAProxy's ring sends to (0600), reads it in threads
    shipper.stats()          # lines read, records, lines that were not the gateway's; each team's log
    shipper.close()          # stops reading, writes what is buffered

One shipper takes the lines of any number of gateways; each line names its team, whose inference log (opened on
its first line) writes under that team's evidence prefix.

It runs with the platform's identity, and writes under the platform's evidence prefix, which teams' S3 sessions
cannot write (the gates' data is what the gateway saw, not what a notebook or a replica says). Each line is one
side's answer to one request: side, version and times are the gateway's; `outputs` are the answer's predictions
(or generations), an error answer's `message` its error. Reading never blocks on S3: InferenceLog.record buffers
(bounded) and samples by request id, so both sides of a mirrored request are kept or left out together.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.serving.inference_log import MODES, SIDES, InferenceLog, InferenceRecord
from mlplatform_core.names import DNS_LABEL_PATTERN

EVIDENCE_FOLDER = "evidence/"  # under the platform's prefix, per team
PLATFORM_PREFIX = "platform"  # the platform's own prefix of the bucket, which no team's S3 session reaches
TEAM = re.compile(DNS_LABEL_PATTERN)


def evidence_prefix(platform_prefix: str, team: str) -> str:
    """Where a team's evidence lives: under the platform's prefix, not the team's (see the module docstring)."""
    return f"{platform_prefix.rstrip('/')}/{EVIDENCE_FOLDER}{team}/".lstrip("/")


def record_of(line: dict[str, Any]) -> InferenceRecord | None:
    """The InferenceRecord of one gateway line (None: not a side's answer, e.g. HAProxy's own client lines)."""
    if line.get("side") not in SIDES or line.get("mode") not in MODES or not line.get("id"):
        return None
    t0 = int(line["t0"])
    # Both frontends time request in → response headers out: the endpoints frontend in t0 and t1, the mirrors
    # frontend (whose t0 is the caller's request's) in latency_us.
    t1 = _number(line.get("t1"))
    latency_us = _number(line["latency_us"]) if "latency_us" in line else (t1 - t0 if t1 else 0)
    status = int(line["status"])
    request, response = _text(line, "req"), _text(line, "res")
    body = _json(response)
    outputs = body.get("predictions", body.get("generations")) if isinstance(body, dict) else None
    error = None
    if status >= 400 or status < 0:
        error = (body.get("message") if isinstance(body, dict) else None) or response[:2000] or f"HTTP {status}"
    return InferenceRecord(request_id=line["id"], endpoint=str(line.get("endpoint", "")), side=line["side"],
                           mode=line["mode"], model_version=str(line.get("version", "")),
                           latency_ms=latency_us / 1000, status=status, error=error, inputs=request or None,
                           outputs=None if outputs is None else json.dumps(outputs),
                           key=line.get("key") if line.get("keyed") == "1" else None,
                           time=datetime.fromtimestamp(t0 / 1e6, UTC))


class EvidenceShipper:
    """Listens on a unix stream socket (0600) for HAProxy's rings: one connection per HAProxy worker, each read
    line by line in a thread of its own. `open_log(team)`: the team's InferenceLog (writing under its evidence
    prefix)."""

    def __init__(self, socket_path: Path, open_log: Callable[[str], InferenceLog], *,
                 teams: Collection[str] | None = None):
        self.socket_path, self.open_log = Path(socket_path), open_log
        self.teams = teams  # None: any team's lines (the local head's gateway serves every team)
        self.logs: dict[str, InferenceLog] = {}
        # not_records: HAProxy's own lines (its mirrors' client, health checks, reloads); unreadable: lines that
        # look like the gateway's and are not (none expected: a sign of a configuration out of step).
        self.counts = {"lines": 0, "records": 0, "not_records": 0, "unreadable": 0, "mirrors_skipped": 0}
        self._lock = threading.Lock()  # the counts and `record`, from every connection's thread
        self._socket: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._stop = threading.Event()

    def start(self) -> None:
        self.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)
        try:
            sock.bind(str(self.socket_path))
        finally:
            os.umask(umask)
        sock.listen(8)
        sock.settimeout(0.5)
        self._socket = sock
        threading.Thread(target=self._accept, args=(sock,), name="evidence-shipper", daemon=True).start()

    def keep_listening(self) -> bool:
        """Listen again if the socket's file is gone (the local Ray head's runtime directory is removed when the head
        stops, and made again when it starts); True when it did."""
        if self._stop.is_set() or self.socket_path.exists():
            return False
        old, self._socket = self._socket, None
        if old is not None:
            old.close()
        self.start()
        return True

    def _accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._read, args=(connection,), name="evidence-ring", daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        """Lines until HAProxy closes the connection or close() shuts it (blocking reads: a file object of a socket
        with a timeout is left inconsistent by a timeout)."""
        with self._lock:
            self._connections.add(connection)
        pending = b""
        try:
            while data := connection.recv(2**16):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    self.ship(line)
        except OSError:
            pass
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()

    def ship(self, data: bytes) -> None:
        """One line of the ring."""
        with self._lock:
            self._ship(data)

    def _ship(self, data: bytes) -> None:
        self.counts["lines"] += 1
        if not data.startswith(b"{"):
            self.counts["not_records"] += 1
            return
        try:
            line = json.loads(data.decode("utf-8", "replace"))
            rec = record_of(line) if isinstance(line, dict) else None
        except (ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
            self.counts["unreadable"] += 1
            return
        team = str(line.get("team", "")) if rec is not None else ""
        if rec is None or not TEAM.fullmatch(team) or (self.teams is not None and team not in self.teams):
            self.counts["not_records"] += 1
            return
        if line.get("mirror") == "skipped":  # shadow did not mirror this request (too many in flight, too long)
            self.counts["mirrors_skipped"] += 1
        self.counts["records"] += 1
        if team not in self.logs:
            self.logs[team] = self.open_log(team)
        self.logs[team].record(rec)

    def stats(self) -> dict:
        with self._lock:
            return {**self.counts, "logs": {team: log.stats() for team, log in self.logs.items()}}

    def close(self, timeout: float = 30.0, *, drain: float = 0.0) -> bool:
        """Stop listening and reading, and write what the logs hold (within `timeout`); whether all was written.
        `drain`: first wait up to so long for the gateways to close their connections (a gateway that stopped:
        what it sent is read to the end)."""
        self._stop.set()
        if self._socket is not None:
            self._socket.close()
            self.socket_path.unlink(missing_ok=True)
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline:
            with self._lock:
                if not self._connections:
                    break
            time.sleep(0.05)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        with self._lock:
            logs = list(self.logs.values())
        return all([log.close(timeout=timeout) for log in logs])


def _text(line: dict, name: str) -> str:
    """A body of the line ("" when empty or left out for its size: unknown), base64 in the line (HAProxy logs "-"
    for an empty or unset variable; its size says which)."""
    value = line.get(name)
    if _number(line.get(f"{name}_size")) == 0 or not value or value == "-":
        return ""
    return base64.b64decode(value).decode("utf-8", "replace")


def _number(text: Any) -> int:
    return int(text) if isinstance(text, str) and text.isdecimal() else 0


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def platform_s3(s3_settings: Any):
    """S3 as the platform (the SDK's credential chain: the hub pod's or the gateway pod's identity; locally the
    platform's), at the catalog's endpoint (`storage.s3`)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("s3", endpoint_url=s3_settings.endpoint_url, region_name=s3_settings.region,
                                          config=Config(retries={"max_attempts": 2, "mode": "standard"},
                                                        connect_timeout=3, read_timeout=20))


def team_logs(catalog: Callable[[], Any], s3: Callable[[], Any]) -> Callable[[str], InferenceLog]:
    """`open_log(team)`: the team's evidence log, written with `s3()` under the platform's evidence prefix with the
    catalog's inference-log batching (all of every line: the gateway samples)."""
    from mlplatform.serving.inference_log import S3Writer

    def open_log(team: str) -> InferenceLog:
        c = catalog()
        settings = {**c.serving.inference_log.model_dump(), "sample_rate": 1.0}
        writer = S3Writer(s3(), c.storage.s3.bucket, evidence_prefix(PLATFORM_PREFIX, team))
        return InferenceLog.from_settings(writer, settings, seed=team)

    return open_log


def local_shipper(catalog: Callable[[], Any], s3: Callable[[], Any], environ: Mapping[str, str] | None = None
                  ) -> EvidenceShipper:
    """The platform service's shipper on the local platform: on the local Ray head's evidence socket, with the
    service's S3 identity."""
    from mlplatform.serving.ray_head import LocalRayConfig

    return EvidenceShipper(LocalRayConfig.from_environ(environ).evidence_socket, team_logs(catalog, s3))
