"""The hub warms what the first login and spawn page use once it runs (hub_config/warm_up.py): its own login page
(templates, static files' hashes), the spawn pages' templates, the catalog and the governance stores. Here
against a stand-in hub: a tornado server for the login page, a Jinja environment, the local spawner's config."""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace

from jinja2 import DictLoader, Environment
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets.config import Config

from hub_config import warm_up as warm
from hub_config.catalog import DEFAULT_CATALOG
from hub_config.governance import Governance
from hub_config.spawners.local import LocalPlatformSpawner
from hub_config.spawners.profiles_mixin import _templates as profile_templates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_hub(port: int, *, listening_late: bool = False) -> SimpleNamespace:
    env = Environment(loader=DictLoader({name: f"<p>{name}</p>" for name in warm.TEMPLATES}))
    return SimpleNamespace(hub=SimpleNamespace(url=f"http://127.0.0.1:{port}/hub/"),
                           tornado_settings={"jinja2_env": env}, spawner_class=LocalPlatformSpawner,
                           config=Config({"LocalPlatformSpawner": {"catalog_file": str(DEFAULT_CATALOG)}}),
                           log=logging.getLogger("test-warm-up"))


async def test_the_first_login_and_spawn_page_find_everything_made(governance_database):
    seen = []

    class ErrorPage(web.RequestHandler):
        def get(self):
            seen.append(self.request.path)
            self.write("error page")

    port = free_port()
    server = HTTPServer(web.Application([(r"/hub/error/404", ErrorPage)]))
    server.listen(port, "127.0.0.1")
    Governance._instances.clear()
    profile_templates.cache.clear()
    app = fake_hub(port)
    try:
        done = await warm.warm_up(app)
    finally:
        server.stop()
    assert done == ["error page", "templates", "catalog", "governance"]
    assert seen == ["/hub/error/404"]  # the hub's own error page, once: its templates and static hashes are made
    cached = {key[1] for key in app.tornado_settings["jinja2_env"].cache}
    assert set(warm.TEMPLATES) <= cached
    assert any(key[1] == "spawn_form.html" for key in profile_templates.cache)
    # The authenticator's and the spawner's governance (one instance here: the same catalog) are connected.
    assert Governance._instances and all(g._stores is not None for g in Governance._instances.values())


async def test_a_hub_that_does_not_answer_is_no_error(monkeypatch, governance_database):
    monkeypatch.setattr(warm, "WAIT_FOR_HUB", 0.5)
    app = fake_hub(free_port())  # nothing listens there
    assert await warm.warm_up(app) == ["templates", "catalog", "governance"]
