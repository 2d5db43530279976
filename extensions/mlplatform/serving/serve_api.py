"""Serve's REST API for the local head without Ray's dashboard (issue 13: the platform's memory).

local.py declares applications the way `serve deploy` does: `PUT /api/serve/applications/` with the whole
set, `GET` of the same path for their states, and `GET /api/ray/version` to tell whether the head runs. Ray
serves these from its dashboard: three processes here (the dashboard, its forkserver and its Serve module,
~490 MB RSS). This module serves the same routes from a thread of Serve's own controller, which Ray Serve
calls back at its start when RAY_SERVE_CONTROLLER_CALLBACK_IMPORT_PATH names `serve_from_controller`
(ray_head.environment sets it): no process of its own (an actor of its own was ~200 MB RSS, most of it Ray
Serve's imports, which the controller has anyway), and restarted with the controller. So Serve runs for as
long as the head does: ray_head.py starts it right after `ray start` (SERVE_LAUNCHER), with the options every
config of local.py names; a config's `http_options` that differ are ignored, as Serve does when it runs.
`DELETE` of the same path deletes every application (`serve shutdown` without stopping Serve's own actors:
they answer this API). Ray's `serve status`, `serve deploy` and `serve shutdown` work against it
(`-a http://127.0.0.1:<Ray + 1>`, with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH naming the head's token).

Every request needs the head's token (`Authorization: Bearer …`, the 0600 file Ray's own token
authentication reads); the server listens on 127.0.0.1 only.
With MLPLATFORM_RAY_DASHBOARD_MODULES set, Ray's dashboard runs instead and its Serve module answers.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import ray

from .ray_head import SERVE_API_PORT_VAR

APPLICATIONS = "/api/serve/applications/"
VERSION = "/api/ray/version"
MAX_BODY = 16 * 2**20
ANSI = re.compile(r"\x1b\[[0-9;]*m")

logger = logging.getLogger("ray.serve")  # the controller's log file


class ServeApi:
    """An HTTP server on 127.0.0.1:`port` in a thread of its own, answering from Serve's controller."""

    def __init__(self, port: int, token_path: str):
        self.token = Path(token_path).read_text().strip().encode()
        self.lock = threading.Lock()  # one config change at a time, as Serve's REST API
        self._client = None
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="serve-api", daemon=True).start()

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(token.strip().encode(), self.token)

    def client(self):
        """Serve's client for its controller (this process: calls go through its task queue, as anyone's)."""
        if self._client is None:
            from ray.serve._private.client import ServeControllerClient
            from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

            self._client = ServeControllerClient(ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE))
        return self._client

    def details(self) -> dict:
        return ray.get(self.client()._controller.get_serve_instance_details.remote(), timeout=30)

    def apply(self, body: dict) -> None:
        """Validate `body` as a whole Serve config (pydantic's ValidationError names each bad field) and hand it
        to the controller, as Ray's dashboard does."""
        from ray.serve._private.api import _check_http_options
        from ray.serve.schema import ServeDeploySchema

        config = ServeDeploySchema.model_validate(body)
        with self.lock:
            client = self.client()
            _check_http_options(client, config.http_options.model_dump())  # a warning in the log, as Serve's
            if config.logging_config:
                client.update_global_logging_config(config.logging_config)
            client.deploy_apps(config)

    def delete_all(self) -> None:
        """`serve shutdown`: every application goes; Serve's own actors stay (this API is one of them)."""
        with self.lock:
            self.client().delete_all_apps(blocking=False)


def _handler(api: ServeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path == VERSION:
                self._reply(200, {"ray_version": ray.__version__})
            elif self.path.partition("?")[0] == APPLICATIONS:
                self._call(api.details)
            else:
                self._reply(404, f"no route {self.path}")

        def do_PUT(self) -> None:
            if not self._authorized():
                return
            if self.path != APPLICATIONS:
                return self._reply(404, f"no route {self.path}")
            length = self.headers.get("Content-Length", "")
            length = int(length) if length.isdecimal() else 0
            if not 0 < length <= MAX_BODY:
                return self._reply(400, f"a JSON body of 1 to {MAX_BODY} bytes is needed")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError as e:
                return self._reply(400, f"the body is not JSON: {e}")
            if not isinstance(body, dict):
                return self._reply(400, "the body must be a JSON object (a Serve config)")
            self._call(lambda: api.apply(body))

        def do_DELETE(self) -> None:
            if not self._authorized():
                return
            if self.path != APPLICATIONS:
                return self._reply(404, f"no route {self.path}")
            self._call(api.delete_all)

        def _authorized(self) -> bool:
            if api.authorized(self.headers.get("Authorization")):
                return True
            self._reply(401, "the head's token is needed (Authorization: Bearer …)")
            return False

        def _call(self, action) -> None:
            """Answer with what `action` returns (an empty object for None), or its error."""
            try:
                self._reply(200, action() or {})
            except ray.exceptions.RayTaskError as e:  # the controller refused the config
                self._reply(400, _task_error(e))
            except ray.exceptions.RayError as e:
                self._reply(503, f"Ray Serve's controller did not answer: {e}")
            except ValueError as e:  # pydantic's ValidationError: the config's bad fields
                self._reply(400, str(e))

        def _reply(self, status: int, payload: dict | str) -> None:
            """JSON data, or an error as plain text (as Ray's dashboard answers)."""
            text = isinstance(payload, str)
            data = (payload if text else json.dumps(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - polling would fill the controller's log
            pass

    return Handler


def _task_error(error: Exception) -> str:
    """A task's error without the actor's header line (pid, actor id) and terminal colours."""
    text = ANSI.sub("", str(error))
    return "\n".join(line for line in text.splitlines()[1:] if line.strip()) or text


def serve_from_controller() -> None:
    """Serve's controller calls this as it starts: serve the API from it. Never raises (a failing callback would
    stop Serve's controller); a failure is in the controller's log, and the head's start reports the API absent."""
    try:
        ServeApi(int(os.environ[SERVE_API_PORT_VAR]), os.environ["RAY_AUTH_TOKEN_PATH"])
    except Exception:
        logger.exception("mlplatform: Serve's REST API did not start")


def start_serve(*, gcs_address: str, http_port: int) -> None:
    """Start Serve on the head with the options of local.py's configs (its controller then serves the API); the
    calling process is a Ray driver until it returns (Serve's actors are detached)."""
    from ray import serve

    ray.init(address=gcs_address, namespace="serve", log_to_driver=False, logging_level="WARNING")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port}, proxy_location="HeadOnly")
    finally:
        ray.shutdown()
