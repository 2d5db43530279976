"""Drive the real hub over HTTP as a browser would: log in through the provider's form, spawn, stop;
change realm users as an administrator would in Keycloak."""

from __future__ import annotations

import json
import os
import re
import time
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import requests

from hub_config.local.platform import REALM_FILE

PASSWORDS = {u["username"]: u["password"] for u in json.loads(REALM_FILE.read_text())["users"]}


class LoginFailed(AssertionError):
    pass


class UserSession:
    """One user's browser-like session with the hub (cookies, XSRF token)."""

    def __init__(self, hub_url: str, name: str):
        self.hub_url = hub_url
        self.name = name
        self.http = requests.Session()
        # The hub's pages are UTF-8 but do not say so in Content-Type.
        self.http.hooks["response"].append(lambda r, *args, **kwargs: setattr(r, "encoding", "utf-8"))
        self.authorize_url: str | None = None  # the provider URL the hub sent us to

    # --- login --------------------------------------------------------------------------------
    def login(self, password: str) -> requests.Response:
        """The authorization code flow through the provider's login form; returns the hub's answer."""
        form_page = self.http.get(f"{self.hub_url}/hub/oauth_login")
        self.authorize_url = next((r.headers["location"] for r in form_page.history
                                   if "/protocol/openid-connect/auth" in r.headers.get("location", "")), None)
        return self.submit_provider_form(form_page, password)

    def submit_provider_form(self, form_page: requests.Response, password: str) -> requests.Response:
        match = re.search(r'<form id="kc-form-login"[^>]*action="([^"]+)"', form_page.text)
        if not match:
            raise LoginFailed(f"no login form at {form_page.url}: {form_page.status_code} {form_page.text[:300]}")
        return self.http.post(urljoin(form_page.url, unescape(match.group(1))),
                              data={"username": self.name, "password": password})

    @property
    def xsrf(self) -> str:
        return self.http.cookies.get("_xsrf", path="/hub/") or self.http.cookies.get("_xsrf") or ""

    # --- hub API with the login cookie --------------------------------------------------------
    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"X-XSRFToken": self.xsrf, **kwargs.pop("headers", {})}
        return self.http.request(method, f"{self.hub_url}/hub/api{path}", headers=headers, **kwargs)

    def new_token(self, scopes: list[str] | None = None, owner: str | None = None) -> str:
        """A new API token of `owner` (default: this user), limited to `scopes` (default: all of the owner's)."""
        body = {"note": "test", **({"scopes": scopes} if scopes is not None else {})}
        r = self.api("POST", f"/users/{owner or self.name}/tokens", json=body)
        assert r.status_code == 201, f"{self.name} could not create a token {scopes}: {r.status_code} {r.text}"
        return r.json()["token"]

    def model(self) -> dict:
        r = self.api("GET", f"/users/{self.name}")
        r.raise_for_status()
        return r.json()

    def spawn_page(self) -> requests.Response:
        return self.http.get(f"{self.hub_url}/hub/spawn/{self.name}")

    def submit_spawn_form(self, fields: dict) -> requests.Response:
        """POST the spawn form as the browser does (fields as the form names them)."""
        return self.http.post(f"{self.hub_url}/hub/spawn/{self.name}", data={"_xsrf": self.xsrf, **fields},
                              allow_redirects=False)

    def start(self, **user_options) -> requests.Response:
        """Start the default server through the REST API with user options."""
        return self.api("POST", f"/users/{self.name}/server", json=user_options)

    def wait_ready(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.model()["servers"].get("")
            if server and server["ready"]:
                return server
            if not server or not server["pending"] and not server["ready"]:
                raise AssertionError(f"{self.name}'s server is not starting: {server}")
            time.sleep(0.5)
        raise AssertionError(f"{self.name}'s server was not ready within {timeout} s")

    def stop(self, timeout: float = 60) -> None:
        """Stop the default server and wait until the hub lists none. The stop is asked again whenever none is under
        way: the hub refuses one while another is pending, and a browser page left on the spawn-pending page may
        start the server again meanwhile (a later test would find it "pending stop")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            servers = self.model()["servers"]
            if not servers:
                return
            if (servers.get("") or {}).get("pending") != "stop":
                r = self.api("DELETE", f"/users/{self.name}/server")
                if r.status_code not in (202, 204, 400) and r.status_code < 500:
                    r.raise_for_status()
            time.sleep(0.3)
        raise AssertionError(f"{self.name}'s server did not stop within {timeout} s")

    def logout(self) -> requests.Response:
        return self.http.get(f"{self.hub_url}/hub/logout")


class HubClient:
    def __init__(self, platform):
        self.platform = platform
        self.sessions: list[UserSession] = []

    def session(self, name: str) -> UserSession:
        s = UserSession(self.platform.hub_url, name)
        self.sessions.append(s)
        return s

    def login(self, name: str, password: str | None = None) -> UserSession:
        s = self.session(name)
        r = s.login(password or PASSWORDS[name])
        if urlparse(r.url).path.startswith("/realms/") or r.status_code >= 400:
            raise LoginFailed(f"login of {name} ended at {r.url} with {r.status_code}")
        return s

    def start_server(self, name: str, **options) -> tuple[UserSession, dict[str, str]]:
        """Log `name` in, start their default server (profile cpu unless told), and return (session, its environment)."""
        session = self.login(name)
        deadline = time.monotonic() + 60  # a stop still under way (an earlier test's teardown) ends first
        while (session.model()["servers"].get("") or {}).get("pending") == "stop" and time.monotonic() < deadline:
            time.sleep(0.3)
        r = session.start(**{"profile": "cpu", **options})
        assert r.status_code in (201, 202), f"{name}'s server did not start: {r.status_code} {r.text}"
        session.wait_ready()
        return session, self.server_env(name)

    def server_env(self, name: str) -> dict[str, str]:
        """The environment of `name`'s running server started by this hub (not another test session's)."""
        api_url = f"http://127.0.0.1:{self.platform.ports.hub_api}/hub/api"
        for proc in Path("/proc").iterdir():
            try:
                if not proc.name.isdigit() or b"jupyterhub-singleuser" not in (proc / "cmdline").read_bytes():
                    continue
                raw = (proc / "environ").read_bytes()
            except OSError:
                continue
            env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
            if env.get("JUPYTERHUB_USER") == name and env.get("JUPYTERHUB_API_URL", "").rstrip("/") == api_url:
                return env
        raise LookupError(f"no server of {name} started by the hub at {api_url}")

    def stop_all(self) -> None:
        for s in self.sessions:
            try:
                if s.model()["servers"]:
                    s.stop()
            except (requests.RequestException, ValueError, KeyError):
                pass  # logged out, or never logged in


class RealmUsers:
    """Change realm users while the provider runs (its user-changes.json), as an administrator does in Keycloak."""

    def __init__(self, platform):
        self.file = Path(platform.data_dir) / "sso" / "user-changes.json"

    def change(self, name: str, **fields) -> None:
        """Replace fields of a realm user: groups=["/team-nlp"], realmRoles=[...], enabled=False."""
        changes = json.loads(self.file.read_text()) if self.file.exists() else {}
        changes[name] = {**changes.get(name, {}), **fields}
        tmp = self.file.with_name(".user-changes.json.tmp")
        tmp.write_text(json.dumps(changes))
        os.replace(tmp, self.file)  # the provider never reads half a file

    def reset(self) -> None:
        self.file.unlink(missing_ok=True)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
