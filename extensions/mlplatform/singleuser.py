"""`mlplatform-jupyterhub-singleuser`: the local platform's notebook server, `jupyterhub-singleuser` less one
Node.js process at each start.

JupyterLab reads yarn's configuration when its server extension is imported (`node yarn.js config --json`:
~0.9 s of CPU, and seconds on a busy machine, before the server listens), only for the npm registry of its
build and extension-install commands. A platform's server builds nothing (the package's page config:
buildAvailable false) and its extension manager is PyPI's: it takes what JupyterLab takes where Node.js is
not installed, yarn's default registry. Everything else is jupyterhub-singleuser's own.

JupyterLab's own plugins all stay enabled (the page config disables none): with 14 of them disabled (debugger,
table of contents, extension and plugin managers, viewers, ...) a cold first load of /lab took 5.35 instead of
5.74 CPU-seconds of Chromium, within the noise, and two notebook plugins failed to activate. The browser's time
is JupyterLab's ~5 MB of scripts compiled afresh (a browser whose cache holds them needs about half the CPU).
"""

from __future__ import annotations


def _without_node(logger) -> dict:
    """What `jupyterlab.commands._yarn_config` answers where Node.js is not installed."""
    return {"yarn config": {}, "npm config": {}}


def skip_yarn_config() -> None:
    """Before jupyterlab.labapp is imported (by the server's discovery of its extensions)."""
    from jupyterlab import commands

    commands._yarn_config = _without_node


def main(argv=None):
    skip_yarn_config()
    from jupyterhub.singleuser import main as singleuser

    return singleuser(argv)
