"""The champion's router during a rollout: which side answers, the shadow's mirror, the inference log.

It lives in the champion's replicas (the endpoint's ingress, app.py), so a request the candidate does
not answer takes no extra hop. The candidate is the `Candidate` deployment, called through its handle
(`respond`, the same code the champion answers with). Each side's `latency_ms` is measured in its own
replica, so the two compare fairly (the hop from the router to the candidate is not in it).

- shadow: the champion answers; the request is sent on to the candidate in the background (at most
  MAX_MIRRORS in flight per replica, the rest not mirrored and counted), never delaying the caller.
- canary: the rollout's share goes to the candidate (by the caller's X-Rollout-Key when given). A
  candidate that cannot be reached (its replicas gone) is recorded as a 503 of the candidate and the
  champion answers instead, so callers never see the candidate's absence.
- every answer of a side carries X-Rollout-Side and X-Model-Version; both sides of a request are
  recorded in the inference log under the same request id (X-Request-Id when the caller sends one).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .inference_log import DEFAULTS, InferenceLog, InferenceRecord, S3Writer
from .rollout import CANDIDATE, CHAMPION, KEY_HEADER, SIDE_HEADER, Rollout, from_config

log = logging.getLogger("ray.serve")

MAX_MIRRORS = 128  # shadow requests in flight per replica: a slow candidate cannot pile up memory
ROUTED_PATHS = ("/predict", "/generate")


@dataclass
class Answer:
    """One side's answer: HTTP status, JSON document, headers, and how long that side took."""

    status: int
    doc: dict
    headers: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0.0
    unreachable: bool = False  # the candidate's handle failed: no model answered


class Router:
    def __init__(self, candidate: Any, endpoint: str, candidate_version: str = ""):
        self.candidate = candidate
        self.endpoint = endpoint
        self.candidate_version = candidate_version
        self.rollout = Rollout(mode="off")
        self.log: InferenceLog | None = None
        self._log_settings: dict | None = None
        self._mirrors: set[asyncio.Task] = set()
        self.mirrors_skipped = 0
        self.candidate_unreachable = 0

    def reconfigure(self, config: dict) -> None:
        """The rollout and inference-log settings of the champion's user_config (in place)."""
        self.rollout = from_config(config.get("rollout")) or Rollout(mode="off")
        settings = config.get("inference_log")
        if settings != self._log_settings:
            previous, self.log, self._log_settings = self.log, _open_log(settings, self.endpoint), settings
            if previous is not None:  # its last records are written off the replica's event loop
                threading.Thread(target=previous.close, kwargs={"timeout": 10}, daemon=True).start()

    async def route(self, champion: Any, method: str, path: str, body: bytes, headers: Any) -> Answer:
        if method != "POST" or path not in ROUTED_PATHS or self.rollout.mode == "off":
            answer = await champion.respond(method, path, body)
            answer.headers[SIDE_HEADER] = CHAMPION
            return answer
        rollout, arrived = self.rollout, datetime.now(UTC)
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        key = headers.get(KEY_HEADER.lower())
        side = rollout.answered_by(key)
        if side == CANDIDATE:
            answer = await self._candidate(method, path, body)
            self._record(request_id, CANDIDATE, rollout.mode, answer, body, key, arrived)
            if answer.unreachable:  # the champion answers instead
                side, answer = CHAMPION, await champion.respond(method, path, body)
                self._record(request_id, CHAMPION, rollout.mode, answer, body, key, arrived)
        else:
            answer = await champion.respond(method, path, body)
            self._record(request_id, CHAMPION, rollout.mode, answer, body, key, arrived)
            if rollout.mirrors():
                self._mirror(request_id, rollout.mode, method, path, body, key, arrived)
        answer.headers[SIDE_HEADER] = side
        return answer

    def info(self) -> dict:
        return {**self.rollout.to_dict(), "candidate_version": self.candidate_version,
                "mirrors_in_flight": len(self._mirrors), "mirrors_skipped": self.mirrors_skipped,
                "candidate_unreachable": self.candidate_unreachable,
                "inference_log": self.log.stats() if self.log is not None else None}

    def close(self) -> None:
        if self.log is not None:
            self.log.close(timeout=10)

    # --- the candidate ----------------------------------------------------------------------------
    async def _candidate(self, method: str, path: str, body: bytes) -> Answer:
        started = time.perf_counter()
        try:
            return await self.candidate.respond.remote(method, path, body)
        except Exception as e:  # its replicas gone or failing to start: an answer without a version
            self.candidate_unreachable += 1
            log.warning("the candidate did not answer: %s: %s", type(e).__name__, e)
            return Answer(503, {"message": f"the candidate did not answer ({type(e).__name__})"}, {},
                          (time.perf_counter() - started) * 1000, unreachable=True)

    def _mirror(self, request_id, mode, method, path, body, key, arrived) -> None:
        if len(self._mirrors) >= MAX_MIRRORS:
            self.mirrors_skipped += 1
            return

        async def shadow():
            answer = await self._candidate(method, path, body)
            self._record(request_id, CANDIDATE, mode, answer, body, key, arrived)

        task = asyncio.get_running_loop().create_task(shadow())
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    def _record(self, request_id, side, mode, answer: Answer, body: bytes, key, arrived) -> None:
        if self.log is None:
            return
        doc = answer.doc
        self.log.record(InferenceRecord(
            request_id=request_id, endpoint=self.endpoint, side=side, mode=mode,
            model_version=answer.headers.get("X-Model-Version") or
            (self.candidate_version if side == CANDIDATE else ""),
            latency_ms=answer.latency_ms, status=answer.status,
            error=doc.get("message") if answer.status >= 400 else None,
            inputs=body.decode("utf-8", "replace"), outputs=doc.get("predictions", doc.get("generations")),
            key=key, time=arrived))


def _open_log(settings: dict | None, endpoint: str) -> InferenceLog | None:
    """The inference log of the catalog's settings, writing to the team's S3 prefix (None: off, or
    this replica has no S3 in its environment, which the log says once)."""
    if settings is None:
        return None
    from mlplatform_core.contract import NotOnPlatformError

    values = {**DEFAULTS, **settings}
    try:
        writer = S3Writer.from_environ()
    except NotOnPlatformError as e:
        log.warning("no inference log for %s: %s", endpoint, e)
        return None
    return InferenceLog(writer, sample_rate=float(values["sample_rate"]), batch_rows=int(values["batch_rows"]),
                        flush_seconds=float(values["flush_seconds"]),
                        max_buffered_rows=int(values["max_buffered_rows"]),
                        max_buffered_bytes=int(float(values["max_buffered_mb"]) * 2**20), seed=endpoint)
