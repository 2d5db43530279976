"""The hub's first login and first spawn page, paid once at the hub's start instead of by the first user.

Each of these is made on first use and then kept for the hub's life; a user who logs in right after a (re)start
waited for all of them (the local platform's bench: ~0.5 s of the login → spawn form figure on a quiet machine,
more on a busy one):

- the page templates and the content hashes of their static files (`?v=<sha>` in every page's links: tornado
  reads and hashes each file on first use), by one GET of the hub's own error page (`/hub/error/404`, the page
  the proxy shows: the login page itself only redirects to the provider, auto_login);
- the spawn and spawn-pending pages' templates (JupyterHub's and the profile form's);
- the catalog as the spawner reads it (`cached_catalog`: YAML parsed and validated);
- the governance database's connections (the login's audit record, the form's budget lines): engine, tables,
  and the budget lines' queries (read only).

A failed step is logged at debug level and changes nothing: the first user then pays for it, as before.
"""

from __future__ import annotations

import asyncio
import time

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

# How long the warm-up waits for the hub to answer its own error page (it starts listening late in its start).
WAIT_FOR_HUB = 120.0
TEMPLATES = ("login.html", "spawn.html", "spawn_pending.html", "not_running.html", "home.html")


async def warm_up(app) -> list[str]:
    """Warm what the first login and spawn page need; the steps done, in order (for the log and the tests)."""
    done: list[str] = []
    if await _error_page(app):
        done.append("error page")
    if _templates(app):
        done.append("templates")
    done.extend(await asyncio.to_thread(_stores, app))
    return done


async def _error_page(app) -> bool:
    client = AsyncHTTPClient()
    error: Exception = TimeoutError(f"the hub did not answer within {WAIT_FOR_HUB:.0f} s")
    deadline = time.monotonic() + WAIT_FOR_HUB
    while time.monotonic() < deadline:
        if getattr(app, "hub", None) is None or "jinja2_env" not in (getattr(app, "tornado_settings", None) or {}):
            await asyncio.sleep(0.2)  # the hub is still initializing
            continue
        try:  # the hub's own address: no proxy route needed
            await client.fetch(app.hub.url.rstrip("/") + "/error/404", request_timeout=10, follow_redirects=False)
            return True
        except HTTPClientError as e:
            if e.code != 599:  # an answer (a redirect, an error page) warmed what it used
                return True
            error = e  # 599: no answer (curl's client says so of a refused connection too)
        except OSError as e:  # not listening yet
            error = e
        await asyncio.sleep(0.2)
    return _debug(app, "error page", error)


def _templates(app) -> bool:
    try:
        env = app.tornado_settings["jinja2_env"]
        for name in TEMPLATES:
            env.get_template(name)
        from .spawners.profiles_mixin import _templates as profile_templates

        profile_templates.get_template("spawn_form.html")
        return True
    except Exception as e:
        return _debug(app, "templates", e)


def _stores(app) -> list[str]:
    """The catalog and the governance stores the spawner and the authenticator use (blocking: in a thread)."""
    from mlplatform_core.catalog import cached_catalog

    from .catalog import configured_catalog_path
    from .governance import Governance

    done = []
    spawner_catalog = _spawner_catalog_file(app) or configured_catalog_path()
    try:
        cached_catalog(spawner_catalog)
        done.append("catalog")
        for catalog_file in dict.fromkeys([None, spawner_catalog]):  # the authenticator's, the spawner's
            stores = Governance.of(app.config, catalog_file).stores()
        stores[2].statuses()  # the budget lines' queries, compiled once by SQLAlchemy (read-only)
        done.append("governance")
    except Exception as e:
        _debug(app, "catalog and governance", e)
    return done


def _spawner_catalog_file(app) -> str | None:
    for cls in app.spawner_class.mro():
        section = app.config.get(cls.__name__) if cls.__name__ in app.config else None
        if section is not None and section.get("catalog_file"):
            return section["catalog_file"]
    return None


def _debug(app, step: str, e: Exception) -> bool:
    app.log.debug("Warm-up of the %s skipped: %s: %s", step, type(e).__name__, e)
    return False
