"""Serve's REST API for the local head without Ray's dashboard (issue 13: the platform's memory).

local.py declares applications the way `serve deploy` does: `PUT /api/serve/applications/` with the whole
set, `GET` of the same path for their states, and `GET /api/ray/version` to tell whether the head runs. Ray
serves these from its dashboard: three processes here (the dashboard, its forkserver and its Serve module,
~490 MB RSS). This module serves the same routes, with the same semantics, from one detached actor of
the head (`ServeApi`: 0 CPUs, restarted by Ray if it dies, ~200 MB RSS, most of it Ray Serve's imports,
which a handle to Serve's controller needs); DELETE of the same path is `serve shutdown`, as there. Ray's
`serve status`, `serve deploy` and `serve shutdown` work against it (`-a http://127.0.0.1:<Ray + 1>`, with
RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH naming the head's token).

Every request needs the head's token (`Authorization: Bearer …`, the 0600 file Ray's own token
authentication reads); the server listens on 127.0.0.1 only. `start_head_api` (run once by ray_head.py after
`ray start`, in a process of its own that exits) starts the actor.
With MLPLATFORM_RAY_DASHBOARD_MODULES set, Ray's dashboard runs instead and its Serve module answers.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import ray

ACTOR_NAME = "mlplatform-serve-api"
NAMESPACE = "mlplatform"  # the actor's; Serve's own actors are in "serve"
APPLICATIONS = "/api/serve/applications/"
VERSION = "/api/ray/version"
MAX_BODY = 16 * 2**20
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ServeApi:
    """The actor: an HTTP server on 127.0.0.1:`port` in a thread of its own, the controller's handle."""

    def __init__(self, port: int, token_path: str):
        self.token = Path(token_path).read_text().strip().encode()
        self.lock = threading.Lock()  # one config change at a time, as Serve's REST API
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="serve-api", daemon=True).start()

    def ready(self) -> bool:
        return True

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(token.strip().encode(), self.token)

    def controller(self):
        """Serve's controller, or None when Serve does not run."""
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        try:
            return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            return None

    def details(self) -> dict:
        from ray.serve.schema import ServeInstanceDetails

        controller = self.controller()
        if controller is None:
            return ServeInstanceDetails.get_empty_schema_dict()
        return ray.get(controller.get_serve_instance_details.remote(), timeout=30)

    def apply(self, body: dict) -> None:
        """Validate `body` as a whole Serve config (pydantic's ValidationError names each bad field), start Serve
        with its options if it does not run, and hand the config to the controller, as Ray's dashboard does."""
        from ray.serve._private.api import serve_start
        from ray.serve.schema import ServeDeploySchema

        config = ServeDeploySchema.model_validate(body)
        with self.lock:  # serve_start is not thread-safe
            client = serve_start(http_options=config.http_options.model_dump(), proxy_location=config.proxy_location,
                                 grpc_options=config.grpc_options.model_dump(),
                                 global_logging_config=config.logging_config,
                                 controller_options=config.controller_options)
            if config.logging_config:
                client.update_global_logging_config(config.logging_config)
            client.deploy_apps(config)

    def shutdown(self) -> None:
        """`serve shutdown`: every application and Serve's own actors go (the next PUT starts Serve again)."""
        from ray import serve

        with self.lock:
            serve.shutdown()


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
            self._call(api.shutdown)

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

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - polling would fill the actor's log
            pass

    return Handler


def _task_error(error: Exception) -> str:
    """A task's error without the actor's header line (pid, actor id) and terminal colours."""
    text = ANSI.sub("", str(error))
    return "\n".join(line for line in text.splitlines()[1:] if line.strip()) or text


def start_head_api(*, gcs_address: str, api_port: int, token_path: str) -> None:
    """Start the API's actor once the head runs (Serve starts with the first PUT, as with Ray's dashboard); the
    calling process is a Ray driver until it returns (the actor is detached)."""
    ray.init(address=gcs_address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING")
    try:
        actor = ray.remote(ServeApi).options(name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached",
                                             get_if_exists=True, num_cpus=0, max_restarts=-1)
        ray.get(actor.remote(api_port, token_path).ready.remote(), timeout=60)
    finally:
        ray.shutdown()
