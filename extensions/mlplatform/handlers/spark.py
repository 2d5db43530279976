"""Spark jobs over REST: each route calls `mlplatform.spark` (SparkJobError 400,
UnknownApplicationError 404, SparkBackendError 503).

A main file given as a path (or file:// URI) is looked up in the jupyter server's root folder, as
the file browser shows paths, not in the server process's working directory; a path that leads
out of that folder (`..`, an absolute path elsewhere, a symlink) is refused. Other URIs (s3a://,
local://) go to the backend as they are.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join
from tornado import web

from .. import spark
from ..spark.backend import MAX_TAIL
from .base import PREFIX, MLPlatformHandler, Refused

# The keyword arguments of spark.submit.
SUBMIT_FIELDS = ("name", "main_file", "arguments", "executors", "executor_cores", "executor_memory",
                 "driver_cores", "driver_memory", "conf")
DEFAULT_TAIL = "100"


class SparkHandler(MLPlatformHandler):
    def refusal(self, error):
        if isinstance(error, spark.SparkJobError):
            return Refused(400, str(error), field=error.field)
        if isinstance(error, spark.UnknownApplicationError):
            return Refused(404, str(error))
        if isinstance(error, spark.SparkBackendError):
            return Refused(503, str(error))
        return None


class ApplicationsHandler(SparkHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.reply({"applications": await self.call(spark.applications)})

    @web.authenticated
    @authorized
    async def post(self):
        """Submit; 201 with the status and the application's URL in Location."""
        body = self.body(SUBMIT_FIELDS, required=("name", "main_file"))
        body["main_file"] = self.main_file(body["main_file"])
        status = await self.call(spark.submit, **body)
        self.set_header("Location", url_path_join(self.base_url, PREFIX, "spark", status["app_id"]))
        self.reply(status, status=201)

    def main_file(self, value):
        """An absolute path inside the root folder for a path; anything else unchanged (the API checks it)."""
        if not isinstance(value, str) or not value.strip():
            return value
        parsed = urlparse(value.strip())
        if len(parsed.scheme) > 1 and parsed.scheme != "file":
            return value
        # The contents root, which the file browser shows; the server's root_dir for a manager without one.
        root = Path(getattr(self.contents_manager, "root_dir", None) or self.settings["server_root_dir"]).resolve()
        try:
            path = (root / Path(unquote(parsed.path) if parsed.scheme else value.strip()).expanduser()).resolve()
            found = path.is_file()
        except (ValueError, RuntimeError, OSError) as e:  # a NUL byte, ~nosuchuser, a name too long
            raise Refused(400, f"main_file: {value[:200]!r} is not a usable path ({type(e).__name__}); allowed: an "
                               "existing .py file, relative to the server's root folder", field="main_file") from None
        if not path.is_relative_to(root):
            raise Refused(400, f"main_file: {value!r} is outside the server's root folder {root}; allowed: a path "
                               "inside it, relative to it as the file browser shows it (e.g. 'jobs/wordcount.py')",
                          field="main_file")
        if not found:
            raise Refused(400, f"main_file: {value[:200]!r} does not exist (looked for {path}); allowed: an existing .py "
                               "file, relative to the server's root folder as the file browser shows it",
                          field="main_file")
        return str(path)


class ApplicationHandler(SparkHandler):
    @web.authenticated
    @authorized
    async def get(self, app_id: str):
        self.reply(await self.call(spark.status, app_id))

    @web.authenticated
    @authorized
    async def delete(self, app_id: str):
        """Cancel: the application stops (CANCELLED); its status and logs stay readable."""
        self.reply(await self.call(spark.cancel, app_id))


class LogsHandler(SparkHandler):
    @web.authenticated
    @authorized
    async def get(self, app_id: str):
        """?tail=N (1 to MAX_TAIL, default 100) or ?tail=all."""
        tail = self.get_query_argument("tail", DEFAULT_TAIL)
        lines = None if tail == "all" else int(tail) if tail.isascii() and tail.isdecimal() else 0
        if lines is not None and not 1 <= lines <= MAX_TAIL:
            raise Refused(400, f"tail: {tail!r} is not allowed; give a whole number of lines from 1 to {MAX_TAIL}, "
                               "or 'all'", field="tail")
        self.reply(await self.call(spark.logs, app_id, tail=lines))
