"""Login through the real dev OIDC provider and hub: code flow with PKCE, groups, admin, refusal, logout."""

import re
import time
from urllib.parse import urljoin

import requests

from ..conftest import ACCESS_TOKEN_TTL
from ..support.hub import query


def test_code_flow_with_pkce_lands_on_the_spawn_form(hub, platform):
    alice = hub.login("alice")
    params = query(alice.authorize_url)
    assert alice.authorize_url.startswith(f"{platform.realm_url}/protocol/openid-connect/auth?")
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) >= 43
    assert params["client_id"] == "jupyterhub"
    assert set(params["scope"].split()) == {"openid", "profile", "email", "groups", "roles"}
    page = alice.spawn_page()
    assert page.status_code == 200
    assert 'id="profile-item-team-vision--gpu-a100"' in page.text


def test_keycloak_groups_become_hub_groups_and_realm_role_makes_admin(hub):
    alice = hub.login("alice").model()
    assert (alice["name"], alice["groups"], alice["admin"]) == ("alice", ["team-vision"], False)
    admin = hub.login("admin").model()
    assert (sorted(admin["groups"]), admin["admin"]) == (["platform-admins", "team-nlp"], True)


def test_wrong_password_is_refused_by_the_provider(hub, platform):
    eve = hub.session("alice")
    page = eve.login("not-her-password")
    assert page.url.startswith(f"{platform.realm_url}/login-actions/authenticate/")
    assert "Invalid username or password." in page.text
    assert eve.api("GET", "/users/alice").status_code == 403


def test_user_outside_every_team_is_refused_with_a_clear_page(hub, platform):
    eve = hub.session("eve")
    page = eve.login("eve-pw")
    assert page.status_code == 403
    assert "<h1>403 : Access denied</h1>" in page.text
    assert "Your account is not in any team of mlplatform-local. Allowed groups: team-vision, team-nlp." in page.text
    refused = eve.http.get(f"{eve.hub_url}/hub/spawn", allow_redirects=False)
    assert refused.headers["Location"].endswith("/hub/login?next=%2Fhub%2Fspawn")
    # The refusal is in the audit log, with the groups she came with.
    records = requests.get(f"{platform.hub_url}/services/mlplatform/api/audit", timeout=30,
                           params={"actor": "eve", "action": "login"},
                           headers={"Authorization": f"token {hub.login('admin').new_token()}"}).json()["records"]
    assert (records[-1]["target"], records[-1]["outcome"], records[-1]["details"]["groups"]) == (
        "user:eve", "refused", ["contractors"])

    # "Sign in as someone else" ends her SSO session (the provider asks first: there is no ID token hint).
    switch = re.search(r'<a id="mlplatform-switch-account"[^>]*href="([^"]+)"', page.text).group(1)
    confirm = eve.http.get(urljoin(page.url, switch))
    assert confirm.url.startswith(f"{platform.realm_url}/protocol/openid-connect/logout?client_id=jupyterhub&")
    assert 'id="kc-logout"' in confirm.text and "f.submit()" not in confirm.text
    done = submit_logout_form(eve, confirm)
    assert_login_form_after_logout(done, platform)


def assert_login_form_after_logout(done, platform):
    """Back at the hub's login page, which (auto_login) goes on to the provider: its form, asking again."""
    hops = [r.url for r in done.history]
    assert f"{platform.hub_url}/hub/login" in hops and f"{platform.hub_url}/hub/oauth_login" in hops, hops
    assert done.url.startswith(f"{platform.realm_url}/") and 'name="password"' in done.text, done.url


def submit_logout_form(session, page):
    """What the provider's logout page does in a browser: post its form with logout=yes."""
    action = re.search(r'<form id="op.logoutForm" method="post" action="([^"]+)">', page.text).group(1)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"/>', page.text))
    return session.http.post(action, data={**fields, "logout": "yes"})


def test_logout_ends_the_sso_session_too(hub, platform):
    alice = hub.login("alice")
    page = alice.logout()
    # The hub sends the browser to the realm's end-session endpoint with the ID token as hint...
    assert page.url.startswith(f"{platform.realm_url}/protocol/openid-connect/logout?client_id=jupyterhub&")
    assert query(page.url)["post_logout_redirect_uri"] == f"{platform.hub_url}/hub/login"
    assert query(page.url)["id_token_hint"].count(".") == 2
    # ...where, as in Keycloak, a hinted logout needs no click: the page submits itself (run here by hand).
    assert "f.submit()" in page.text
    done = submit_logout_form(alice, page)
    assert_login_form_after_logout(done, platform)
    # Logging in again shows the provider's form: the SSO session is gone, not just the hub cookie.
    again = alice.http.get(f"{platform.hub_url}/hub/oauth_login")
    assert again.url.startswith(f"{platform.realm_url}/login-actions/authenticate/")
    assert 'name="password"' in again.text
    assert alice.api("GET", "/users/alice").status_code == 403


def userinfo(platform, access_token) -> int:
    return requests.get(f"{platform.realm_url}/protocol/openid-connect/userinfo",
                        headers={"Authorization": f"Bearer {access_token}"}).status_code


def test_expired_access_token_is_refreshed_before_spawn(hub, platform):
    alice = hub.login("alice")
    admin = hub.login("admin")  # admins may read auth_state
    before = admin.api("GET", "/users/alice").json()["auth_state"]
    assert before["refresh_token"] and userinfo(platform, before["access_token"]) == 200
    time.sleep(ACCESS_TOKEN_TTL + 6)  # past the lifetime and the provider's clock tolerance
    assert userinfo(platform, before["access_token"]) == 401

    started = time.monotonic()
    assert alice.start(profile="cpu").status_code in (201, 202)
    alice.wait_ready()
    after = admin.api("GET", "/users/alice").json()["auth_state"]
    assert after["access_token"] != before["access_token"]
    # The refreshed token is good — unless the start itself outlasted a token's life (a loaded machine).
    if time.monotonic() - started < ACCESS_TOKEN_TTL - 1:
        assert userinfo(platform, after["access_token"]) == 200


def test_the_hub_warms_the_first_login_once_it_runs(platform):
    """hub_config/warm_up.py: the hub's pages and their static files' hashes, the spawn pages' templates, the catalog and the governance database
    are made at the hub's start, not while the first user waits (the unit test says what each step does)."""
    deadline = time.monotonic() + 60
    while "Warmed up for the first login" not in (log := (platform.logs / "hub.log").read_text(errors="replace")):
        assert time.monotonic() < deadline, "the hub logged no warm-up"
        time.sleep(0.5)
    assert "Warmed up for the first login: error page, templates, catalog, governance" in log
