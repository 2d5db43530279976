"""Startup benchmark of the local platform: how long until a user has JupyterLab, measured as a user sees it.

Each run starts a fresh LocalPlatform (temp data dir, own ports), then drives headless Chromium:

  platform start        LocalPlatform.start(), with the moment each of sso / mlflow / hub answered
  login → spawn form    hub login page → "Sign in with Keycloak" → provider form → the spawn form is shown
  spawn → ...           from clicking Start (cpu profile): the hub API reports the server ready,
                        /user/<name>/lab answers 200, the JupyterLab launcher is rendered
  server stop           DELETE through the hub API until the server is gone
  platform stop         LocalPlatform.stop()

    .venv/bin/python bench/startup.py --runs 3 --port-base 38000

Everything started is stopped at the end of each run, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from hub_config.local.platform import LocalPlatform, Ports  # noqa: E402
from tests.support.hub import PASSWORDS  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# As in tests/browser: Debian's chromium, no sandbox (containers), no background traffic.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

USER = "alice"
PROFILE = "team-vision/cpu"  # the spawn itself is what is measured; a GPU profile starts the same process
POLL = 0.2


def poll(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(POLL)


def one_run(port_base: int, browser) -> dict[str, float]:
    r: dict[str, float] = {"platform start → healthy": 0.0}  # first in the table, before its parts
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-") as tmp:
        platform = LocalPlatform(data_dir=Path(tmp), ports=Ports(hub=port_base, sso=port_base + 80,
                                                                 mlflow=port_base + 500))
        context = None
        try:
            t = time.perf_counter()
            platform.start()
            r["platform start → healthy"] = time.perf_counter() - t
            for name in ("sso", "mlflow", "hub"):  # MLflow starts alongside the provider and the hub
                r[f"  {name} ready after start"] = platform.ready_after[name]

            context = browser.new_context(base_url=platform.hub_url)
            page = context.new_page()
            page.set_default_timeout(60_000)
            api = context.request  # shares the browser's cookies: the hub API as the logged-in user

            def hub_headers() -> dict:
                # The hub's own XSRF cookie (JupyterLab sets another one under /user/<name>/).
                xsrf = [c["value"] for c in context.cookies(platform.hub_url + "/hub/") if c["name"] == "_xsrf"
                        and c["path"].startswith("/hub")]
                return {"X-XSRFToken": xsrf[0] if xsrf else ""}

            def user_model() -> dict:
                resp = api.get(f"/hub/api/users/{USER}", headers=hub_headers())
                assert resp.ok, f"hub API: {resp.status} {resp.text()[:200]}"
                return resp.json()

            t = time.perf_counter()
            page.goto("/hub/login")
            page.click("a:has-text('Sign in with Keycloak')")
            page.fill("#kc-form-login input[name=username]", USER)
            page.fill("#kc-form-login input[name=password]", PASSWORDS[USER])
            page.click("#kc-login")
            page.wait_for_selector("#spawn_form input[name=profile]")
            r["login → spawn form"] = time.perf_counter() - t

            page.check(f"#spawn_form input[name=profile][value='{PROFILE}']")
            t = time.perf_counter()
            page.click("#spawn_form button[type=submit]")
            poll("server ready in the hub API", lambda: (user_model()["servers"].get("") or {}).get("ready"), 120)
            r["spawn → server ready (hub API)"] = time.perf_counter() - t
            poll(f"/user/{USER}/lab 200", lambda: api.get(f"/user/{USER}/lab").status == 200, 60)
            r[f"spawn → /user/{USER}/lab 200"] = time.perf_counter() - t
            page.wait_for_url(re.compile(rf"/user/{USER}/lab"), timeout=120_000)
            page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
            r["spawn → JupyterLab launcher shown"] = time.perf_counter() - t

            t = time.perf_counter()
            resp = api.delete(f"/hub/api/users/{USER}/server", headers=hub_headers())
            assert resp.status in (202, 204), f"stop: {resp.status} {resp.text()[:200]}"
            poll("server stopped", lambda: not user_model()["servers"], 60)
            r["server stop"] = time.perf_counter() - t
        finally:
            if context is not None:
                context.close()
            t = time.perf_counter()
            platform.stop()
            r["platform stop"] = time.perf_counter() - t
    return r


def table(runs: list[dict[str, float]]) -> str:
    names = list(dict.fromkeys(name for run in runs for name in run))  # first-seen order
    width = max(map(len, names))
    lines = [f"{'measure (s)':<{width}}  {'min':>7} {'median':>7} {'max':>7}  n={len(runs)}"]
    for name in names:
        values = [run[name] for run in runs if name in run]
        lines.append(f"{name:<{width}}  {min(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="fresh platforms to start (default 3)")
    p.add_argument("--port-base", type=int, default=38000,
                   help="hub port; proxy API +1, hub API +81, SSO +80, MLflow +500 (default 38000)")
    args = p.parse_args(argv)

    def terminated(signum, frame):
        raise KeyboardInterrupt  # so the finally blocks stop every process

    signal.signal(signal.SIGTERM, terminated)
    runs: list[dict[str, float]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                for i in range(args.runs):
                    runs.append(one_run(args.port_base, browser))
                    print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{k.strip()} {v:.2f}s"
                                                                  for k, v in runs[-1].items()), flush=True)
            finally:
                browser.close()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except Exception as e:  # report what was measured so far; the platform is already stopped
        print(f"run {len(runs) + 1} failed: {type(e).__name__}: {e}", file=sys.stderr)
    if runs:
        print()
        print(table(runs))
    return 0 if len(runs) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
