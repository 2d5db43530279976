"""KeycloakOAuthenticator's own logic; the login itself is tested against the real provider."""

import pytest

from hub_config.keycloak import KeycloakOAuthenticator, keycloak_groups


def test_group_paths_become_group_names():
    auth_state = {"oauth_user": {"groups": ["/team-vision", "/platform-admins", "plain"]}}
    assert keycloak_groups(auth_state) == ["team-vision", "platform-admins", "plain"]
    assert keycloak_groups({"oauth_user": {}}) == []


def test_unreachable_realm_is_named_in_the_error():
    auth = KeycloakOAuthenticator(realm_url="http://127.0.0.1:9/realms/platform", discovery_timeout=0)
    with pytest.raises(RuntimeError, match=r"cannot read the realm's discovery document "
                                           r"http://127.0.0.1:9/realms/platform/.well-known/openid-configuration"):
        auth.authorize_url


def test_missing_realm_url_says_what_to_set():
    with pytest.raises(ValueError, match="KeycloakOAuthenticator.realm_url is not set"):
        KeycloakOAuthenticator().token_url


async def test_realm_role_grants_and_revokes_admin():
    auth = KeycloakOAuthenticator(realm_url="http://sso.invalid/realms/platform")
    model = {"name": "bob", "admin": None,
             "auth_state": {"oauth_user": {"realm_access": {"roles": ["platform-admin"]}}}}
    assert (await auth.update_auth_model(model))["admin"] is True
    model = {"name": "bob", "admin": None, "auth_state": {"oauth_user": {"realm_access": {"roles": []}}}}
    assert (await auth.update_auth_model(model))["admin"] is False
