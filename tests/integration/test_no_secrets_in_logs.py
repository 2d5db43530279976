"""No secret or token value reaches any log the platform writes."""

import json

from ..support.hub import PASSWORDS
from ..support.processes import server_process


def test_logs_hold_no_tokens_passwords_or_keys(hub, platform):
    alice = hub.login("alice")
    admin = hub.login("admin")
    hub.session("alice").login("wrong-password")  # a failed login is logged too
    assert alice.start(profile="gpu-t4", gpu_count=1).status_code in (201, 202)
    alice.wait_ready()
    server_token = server_process("alice")[1]["JUPYTERHUB_API_TOKEN"]
    auth_state = admin.api("GET", "/users/alice").json()["auth_state"]
    alice.stop()
    alice.logout()

    secrets = json.loads((platform.data_dir / "secrets.json").read_text())
    sso_keys = json.loads((platform.data_dir / "sso" / "sso-keys.json").read_text())
    values = {
        "hub client secret": secrets["client_secret"],
        "auth_state encryption key": secrets["crypt_key"],
        "hub cookie secret": (platform.data_dir / "jupyterhub_cookie_secret").read_text().strip(),
        "provider signing key": sso_keys["jwks"]["keys"][0]["d"],
        "provider cookie key": sso_keys["cookieKeys"][0],
        "access token": auth_state["access_token"],
        "refresh token": auth_state["refresh_token"],
        "ID token": auth_state["id_token"],
        "server API token": server_token,
        **{f"password of {name}": password for name, password in PASSWORDS.items()},
        "wrong password": "wrong-password",
    }
    logs = {path.name: path.read_text(errors="replace") for path in platform.logs.glob("*.log")}
    assert set(logs) == {"sso.log", "mlflow.log", "hub.log"}
    assert "login ok for user \"alice\"" in logs["sso.log"]  # the logs are the real ones, and they are written
    leaks = [f"{what} in {name}" for what, value in values.items() for name, text in logs.items() if value in text]
    assert leaks == []
