"""How KeycloakOAuthenticator tells the realm's answers to a refresh apart: refused (log in again),
unreachable, or neither (a bug, raised as it is). The realm here is a small real HTTP server whose
answers each test sets; the whole flow against the dev provider is in tests/integration/test_s3_broker.py.
"""

from __future__ import annotations

import json
import socket
import time

import jwt
import pytest
from tornado import httpserver, web
from tornado.testing import bind_unused_port

from hub_config.keycloak import KeycloakOAuthenticator, RealmUnreachable, RefreshRefused


class Login:
    """What the authenticator reads and writes of JupyterHub's user: the name and auth_state."""

    def __init__(self, name: str, auth_state: dict):
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self):
        return self.auth_state

    async def save_auth_state(self, auth_state):
        self.auth_state = auth_state


class Answer(web.RequestHandler):
    def initialize(self, answers):
        self.answers = answers

    def _answer(self):
        status, body = self.answers[self.request.path]
        self.set_status(status)
        self.finish(json.dumps(body))

    get = post = _answer


@pytest.fixture
async def realm():
    """A realm whose /token and /userinfo give what `answers` holds: {path: (status, body)}."""
    answers = {}
    sock, port = bind_unused_port()
    server = httpserver.HTTPServer(web.Application([(r"/.*", Answer, {"answers": answers})]))
    server.add_sockets([sock])
    yield f"http://127.0.0.1:{port}", answers
    server.stop()


def authenticator(url: str) -> KeycloakOAuthenticator:
    return KeycloakOAuthenticator(realm_url=f"{url}/realms/platform", client_id="jupyterhub", client_secret="s",
                                  token_url=f"{url}/token", userdata_url=f"{url}/userinfo")


def id_token(lifetime: float) -> str:
    key = "a signing key of at least 32 bytes"
    return jwt.encode({"sub": "alice", "exp": int(time.time() + lifetime)}, key, algorithm="HS256")


def expired_login() -> Login:
    return Login("alice", {"id_token": id_token(-10), "refresh_token": "r", "access_token": "a",
                           "token_response": {"access_token": "a", "token_type": "Bearer"},
                           "oauth_user": {"preferred_username": "alice", "groups": ["/team-vision"]}})


async def test_a_fresh_id_token_is_used_as_it_is(realm):
    url, _ = realm
    token = id_token(600)
    assert await authenticator(url).fresh_id_token(Login("alice", {"id_token": token}), None) == token


async def test_an_expiring_id_token_is_refreshed_and_saved(realm):
    url, answers = realm
    fresh = id_token(300)
    answers["/token"] = (200, {"access_token": "a2", "token_type": "Bearer", "id_token": fresh})
    login = expired_login()
    assert await authenticator(url).fresh_id_token(login, None) == fresh
    assert (login.auth_state["id_token"], login.auth_state["access_token"], login.auth_state["refresh_token"]) == (
        fresh, "a2", "r")


@pytest.mark.parametrize("status", [400, 401])
async def test_a_refused_refresh_token_means_log_in_again(realm, status):
    url, answers = realm
    answers["/token"] = (status, {"error": "invalid_grant"})
    with pytest.raises(RefreshRefused, match=r"^the realm refused the refresh of alice's tokens$"):
        await authenticator(url).fresh_id_token(expired_login(), None)


async def test_no_refresh_token_means_log_in_again(realm):
    url, _ = realm
    with pytest.raises(RefreshRefused, match="alice has no refresh token"):
        await authenticator(url).fresh_id_token(Login("alice", {"id_token": id_token(-10)}), None)


@pytest.mark.parametrize("route, status, method, what", [("/token", 503, "fresh_id_token", "tokens"),
                                                          ("/userinfo", 502, "refreshed_auth_model", "login")])
async def test_a_realm_answering_with_a_server_error_is_unreachable(realm, route, status, method, what):
    url, answers = realm
    answers[route] = (status, {"error": "starting"})
    with pytest.raises(RealmUnreachable, match=rf"the realm did not answer the refresh of alice's {what} "
                                               rf"\(HTTP {status}\)"):
        await getattr(authenticator(url), method)(expired_login(), None)


async def test_a_closed_realm_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(RealmUnreachable, match=r"\(connection failed: Connection refused\)"):
        await authenticator(closed).fresh_id_token(expired_login(), None)


async def test_an_answer_the_code_does_not_expect_is_a_bug_not_a_refusal(realm):
    url, answers = realm
    answers["/token"] = (200, {"access_token": "a2", "token_type": "Bearer"})  # no ID token
    login = expired_login()
    with pytest.raises(RuntimeError, match="the realm's answer to the refresh of alice's tokens has no ID token"):
        await authenticator(url).fresh_id_token(login, None)
    assert login.auth_state["access_token"] == "a"  # nothing half-saved


async def test_refreshed_auth_model_reads_the_groups_the_realm_has_now(realm):
    url, answers = realm
    answers["/userinfo"] = (200, {"preferred_username": "alice", "groups": ["/team-nlp"]})
    model = await authenticator(url).refreshed_auth_model(expired_login(), None)
    assert (model["name"], sorted(model["groups"])) == ("alice", ["team-nlp"])


async def test_refreshed_auth_model_refused_when_neither_token_is_accepted(realm):
    url, answers = realm
    answers["/userinfo"] = (401, {"error": "invalid_token"})
    answers["/token"] = (400, {"error": "invalid_grant"})
    with pytest.raises(RefreshRefused, match=r"^the realm refused the refresh of alice's login$"):
        await authenticator(url).refreshed_auth_model(expired_login(), None)

