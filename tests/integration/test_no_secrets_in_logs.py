"""No secret or token value reaches any log the platform writes."""

import base64
import json
import subprocess
import sys

import pytest
import requests
from mlplatform_service.gitops import Credentials, GitOpsRefused, GitOpsRepository, Identity

from ..support.hub import PASSWORDS
from ..support.processes import server_process


S3_CALLS = """
import boto3
s3 = boto3.client("s3")
s3.put_object(Bucket="platform", Key="users/alice/logs-test.txt", Body=b"x")
try:
    s3.get_object(Bucket="platform", Key="users/bob/logs-test.txt")
except s3.exceptions.ClientError:
    pass
"""


def test_logs_hold_no_tokens_passwords_or_keys(hub, platform):
    alice = hub.login("alice")
    admin = hub.login("admin")
    hub.session("alice").login("wrong-password")  # a failed login is logged too
    assert alice.start(profile="gpu-t4", gpu_count=1).status_code in (201, 202)
    alice.wait_ready()
    env = server_process("alice")[1]
    server_token = env["JUPYTERHUB_API_TOKEN"]
    s3 = requests.get(env["MLPLATFORM_CREDENTIALS_URL"], headers={"Authorization": f"token {server_token}"}).json()
    # A notebook's S3 calls through the credential process, one allowed and one denied.
    subprocess.run([sys.executable, "-c", S3_CALLS], env=env, check=True, timeout=120)
    auth_state = admin.api("GET", "/users/alice").json()["auth_state"]
    # The platform's GitOps commit through its Git server, and a clone with a wrong token.
    user, token = platform.gitops_credentials()
    platform_identity = Identity("mlplatform", "mlplatform@mlplatform.local")
    gitops = GitOpsRepository(platform.gitops_url, "main", Credentials(user, token), platform_identity,
                              platform.data_dir / "service-gitops")
    gitops.write("teams/vision/serving/logs-test.yaml", {"kind": "RayService"}, author=Identity("Alice", "alice@x.org"),
                 message="a commit for the logs test")
    with pytest.raises(GitOpsRefused):
        GitOpsRepository(platform.gitops_url, "main", Credentials(user, "wrong-token"), platform_identity,
                         platform.data_dir / "wrong-gitops").read("README.md")
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
        "S3 secret key": s3["SecretAccessKey"],
        "S3 session token": s3["SessionToken"],
        "S3 admin secret key": secrets["s3_secret_key"],
        "STS signing key": secrets["s3_sts_signing_key"],
        "GitOps token": token,
        "GitOps Basic credential": base64.b64encode(f"{user}:{token}".encode()).decode(),
        "wrong GitOps token": "wrong-token",
        **{f"password of {name}": password for name, password in PASSWORDS.items()},
        "wrong password": "wrong-password",
    }
    logs = {path.name: path.read_text(errors="replace") for path in platform.logs.glob("*.log")}
    assert set(logs) == {"sso.log", "mlflow.log", "hub.log", "s3.log", "git.log"}
    assert "200 POST /platform/gitops.git/git-receive-pack user=mlplatform" in logs["git.log"]
    assert "login ok for user \"alice\"" in logs["sso.log"]  # the logs are the real ones, and they are written
    leaks = [f"{what} in {name}" for what, value in values.items() for name, text in logs.items() if value in text]
    assert leaks == []
