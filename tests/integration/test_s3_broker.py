"""The hub's S3 credential broker against the real hub, provider and S3 server (SeaweedFS with STS); who may
read whose credentials is printed as an authorization matrix."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import boto3
import botocore.credentials
import botocore.session
from botocore.utils import parse_timestamp
import pytest
import requests

from hub_config.s3_broker import CredentialsUnavailable, S3CredentialBroker

from ..conftest import MEMBERSHIP_MAX_AGE
from ..support.authz import authorization_matrix
from ..support.hub import RealmUsers
from ..support.mlflow_access import admin_api

READ_WRITE = """
import boto3, sys
s3 = boto3.client("s3")
bucket, key = sys.argv[1], sys.argv[2]
try:
    s3.put_object(Bucket=bucket, Key=key, Body=b"hello from the notebook")
    print(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
except s3.exceptions.ClientError as e:
    print("denied:", e.response["Error"]["Code"])
"""


SCOPE = "custom:mlplatform:s3-credentials"


def credentials_url(platform, user):
    return f"{platform.hub_url}/hub/api/mlplatform/s3-credentials/{user}"


def start(hub, name, **options):
    """Log `name` in, start their default server (CPU profile), return the session and the server's environment."""
    session = hub.login(name)
    assert session.start(**{"profile": "cpu", **options}).status_code in (201, 202)
    session.wait_ready()
    return session, hub.server_env(name)


@pytest.fixture(scope="module")
def authz(request):
    yield from authorization_matrix(request)


@pytest.fixture
def alice_server(hub):
    return start(hub, "alice")


def with_token(token, url):
    return requests.get(url, headers={"Authorization": f"token {token}"}, timeout=60)


def as_server(env, url):
    return with_token(env["JUPYTERHUB_API_TOKEN"], url)


def token_scopes(platform, token) -> set[str]:
    return set(with_token(token, f"{platform.hub_url}/hub/api/user").json()["scopes"])


def test_server_token_gets_its_users_credentials_once_per_lifetime(platform, alice_server):
    _, env = alice_server
    first = as_server(env, env["MLPLATFORM_CREDENTIALS_URL"])
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    body = first.json()
    assert sorted(body) == ["AccessKeyId", "Expiration", "SecretAccessKey", "SessionToken", "Version"]
    assert body["Version"] == 1 and body["Expiration"].endswith("Z")
    # Cached: the same credentials until shortly before they expire, whoever asks how often.
    assert {as_server(env, env["MLPLATFORM_CREDENTIALS_URL"]).json()["AccessKeyId"] for _ in range(5)} == {
        body["AccessKeyId"]}


def test_the_server_token_keeps_jupyterhubs_scopes_and_adds_credentials_for_its_own_user(platform, alice_server):
    _, env = alice_server
    scopes = token_scopes(platform, env["JUPYTERHUB_API_TOKEN"])
    assert {"users:activity!user=alice", "access:servers!server=alice/", f"{SCOPE}!user=alice"} <= scopes
    assert {s for s in scopes if s.startswith(SCOPE)} == {f"{SCOPE}!user=alice"}


def test_only_the_users_own_server_and_session_get_their_credentials(hub, platform, alice_server, authz):
    alice, alice_env = alice_server
    bob, bob_env = start(hub, "bob")
    admin = hub.login("admin")
    # The token bob's server receives when an admin opens it (JupyterHub's OAuth for the server).
    admin_on_bobs_server = admin.new_token(["access:servers!server=bob/"])
    assert {s for s in token_scopes(platform, admin_on_bobs_server) if not s.startswith("read:")} == {
        "access:servers!server=bob/"}
    tokens = {
        "alice's server token": alice_env["JUPYTERHUB_API_TOKEN"],
        "alice's API token (all her scopes)": alice.new_token(),
        "alice's token limited to read:users:name": alice.new_token(["read:users:name!user"]),
        "bob's server token": bob_env["JUPYTERHUB_API_TOKEN"],
        "admin's API token (all their scopes)": admin.new_token(),
        "admin's token for bob's server (access:servers!server=bob/)": admin_on_bobs_server,
    }
    sessions = {"alice's login session": alice, "bob's login session": bob, "admin's login session": admin}
    # Each actor asks for alice's and bob's credentials; it may have only those of the users listed.
    may_mint = {"alice's server token": {"alice"}, "alice's login session": {"alice"},
                "alice's API token (all her scopes)": {"alice"}, "bob's server token": {"bob"},
                "bob's login session": {"bob"}}
    cells = [(actor, target, target in may_mint.get(actor, ()))
             for actor in [*tokens, *sessions, "no credentials"] for target in ("alice", "bob")]
    for actor, target, allowed in cells:
        if actor in sessions:
            r = sessions[actor].api("GET", f"/mlplatform/s3-credentials/{target}")
        elif actor in tokens:
            r = with_token(tokens[actor], credentials_url(platform, target))
        else:
            r = requests.get(credentials_url(platform, target), timeout=60)
        authz.check(actor, f"GET s3-credentials/{target}", r, allowed=allowed)
        if allowed:
            assert sorted(r.json()) == ["AccessKeyId", "Expiration", "SecretAccessKey", "SessionToken", "Version"]
        elif actor == "no credentials":
            assert "need authentication" in r.json()["message"]
        else:
            assert r.json()["message"] == (
                f"only {target}'s own servers and login session may read {target}'s S3 credentials "
                f"(scope {SCOPE}!user={target}); this token or session lacks it")


def test_a_user_without_a_running_server_is_told_to_start_one(hub, platform, authz):
    bob = hub.login("bob")
    r = bob.api("GET", "/mlplatform/s3-credentials/bob")
    authz.check("bob's login session, no server running", "GET s3-credentials/bob", r, allowed=False, status=409)
    assert r.json()["message"] == (
        "bob has no running server: S3 credentials are issued only to running servers; start one from the hub")


def test_membership_is_rechecked_and_refresh_failures_are_told_apart(hub, platform, authz):
    """After at most the membership bound: a user moved out of the server's team is refused (403), a
    refused refresh says log in again (401), a bug is a 500, an unresponsive realm a 503."""
    max_age = MEMBERSHIP_MAX_AGE  # the test platform's (conftest.py)
    started = {name: start(hub, name, **options) for name, options in
               (("alice", {}), ("bob", {}), ("dana", {"team": "team-vision"}), ("admin", {}))}
    servers = {name: env for name, (_, env) in started.items()}
    admin = started["admin"][0]

    def ask(name):
        return as_server(servers[name], credentials_url(platform, name))

    for name in servers:
        assert ask(name).status_code == 200
    read = time.monotonic()  # every membership was read from the realm at this time at the latest
    realm = RealmUsers(platform)
    bobs_auth_state = admin.api("GET", "/users/bob").json()["auth_state"]
    try:
        realm.change("alice", groups=["/team-nlp"])  # moved from team-vision to team-nlp
        realm.change("dana", enabled=False)  # disabled: the realm refuses her refresh token
        # A token response without an access token in bob's auth_state: a bug in whatever wrote it.
        assert admin.api("PATCH", "/users/bob", json={"auth_state": {**bobs_auth_state, "token_response": {}}}).ok
        want = {"alice": 403, "dana": 401, "bob": 500}
        while True:
            got = {name: ask(name) for name in want}
            if {name: r.status_code for name, r in got.items()} == want or time.monotonic() > read + max_age + 30:
                break
            assert {r.status_code for r in got.values()} <= {200, *want.values()}
            time.sleep(2)
        authz.check("alice's server (team-vision) after she moved to team-nlp", "GET s3-credentials/alice",
                    got["alice"], allowed=False, status=403)
        assert got["alice"].json()["message"] == (
            "alice is no longer a member of team team-vision: S3 credentials for it are issued to team "
            "members only. Ask a platform administrator to add alice back, or start a server for another team")
        authz.check("dana's server after the realm disabled her", "GET s3-credentials/dana", got["dana"],
                    allowed=False, status=401)
        assert got["dana"].json()["message"] == (
            "the realm refused the refresh of dana's login: dana must log in to the hub again")
        authz.check("bob's server, a bug in the refresh (broken auth_state)", "GET s3-credentials/bob", got["bob"],
                    allowed=False, status=500)
        assert "log in" not in got["bob"].text
        hub_log = (platform.logs / "hub.log").read_text()
        assert "Dropped the cached S3 credentials of alice for team team-vision: no longer a member" in hub_log
        assert "Uncaught exception GET /hub/api/mlplatform/s3-credentials/bob" in hub_log
        assert "KeyError: 'access_token'" in hub_log
    finally:
        realm.reset()
        admin.api("PATCH", "/users/bob", json={"auth_state": bobs_auth_state})

    # The realm accepts connections but does not answer: tornado gives up after its 20 s request timeout.
    time.sleep(max(0.0, read + max_age - time.monotonic()))
    provider = platform.processes["sso"].pid
    os.kill(provider, signal.SIGSTOP)
    try:
        r = ask("admin")
    finally:
        os.kill(provider, signal.SIGCONT)
    authz.check("admin's server while the realm does not answer", "GET s3-credentials/admin", r, allowed=False,
                status=503)
    assert r.json()["message"] == ("the realm did not answer the refresh of admin's login (no response: timed out "
                                   "or the connection failed): "
                                   "try again when the realm is back")
    assert ask("admin").status_code == 200  # realm back: the membership is read, credentials handed out


def test_notebook_sdk_uses_brokered_credentials_and_the_server_enforces_prefixes(platform, alice_server):
    _, env = alice_server
    bucket = env["MLPLATFORM_S3_BUCKET"]

    def run(key):
        out = subprocess.run([sys.executable, "-c", READ_WRITE, bucket, key], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run("users/alice/notes.txt") == "hello from the notebook"
    assert run("teams/team-vision/shared.txt") == "hello from the notebook"
    assert run("users/bob/notes.txt") == "denied: AccessDenied"
    assert run("teams/team-nlp/shared.txt") == "denied: AccessDenied"
    assert not any(k.startswith("AWS_ACCESS_KEY") or k == "AWS_SECRET_ACCESS_KEY" for k in env)


def test_renewal_across_many_lifetimes_never_fails_and_calls_sts_once_per_lifetime(hub, platform):
    """The broker in process with an injected clock, shared with botocore; STS and S3 calls are real."""
    admin = hub.login("admin")
    hub.login("alice")  # fresh tokens
    catalog = platform.load_catalog()
    lifetime = catalog.storage.s3.credentials_duration_seconds
    clock = [time.time()]
    broker = S3CredentialBroker(catalog, clock=lambda: clock[0])
    broker.renew_before_seconds = 600

    async def id_token():
        return admin.api("GET", "/users/alice").json()["auth_state"]["id_token"]

    def refresh():  # what botocore's credential_process provider does with the process's JSON
        out = asyncio.run(broker.credentials("alice", "team-vision", id_token)).as_credential_process()
        return {"access_key": out["AccessKeyId"], "secret_key": out["SecretAccessKey"],
                "token": out["SessionToken"], "expiry_time": out["Expiration"]}

    session = botocore.session.get_session()
    first = refresh()
    session._credentials = botocore.credentials.RefreshableCredentials(
        first["access_key"], first["secret_key"], first["token"], parse_timestamp(first["expiry_time"]), refresh,
        "mlplatform", time_fetcher=lambda: datetime.fromtimestamp(clock[0], timezone.utc))
    s3 = boto3.Session(botocore_session=session).client("s3", endpoint_url=platform.s3_url, region_name="us-east-1")
    for i in range(60):  # ten lifetimes
        clock[0] += lifetime / 6
        s3.put_object(Bucket="platform", Key=f"users/alice/renewal/{i}", Body=b"x")
        assert s3.get_object(Bucket="platform", Key=f"users/alice/renewal/{i}")["Body"].read() == b"x"
    # 120 S3 calls over ten lifetimes: STS once per lifetime less the renewal margin, not once per request.
    assert broker.sts_calls == 1 + int(60 * lifetime / 6) // (lifetime - broker.renew_before_seconds)


def credential_process(env):
    return subprocess.run(["mlplatform-aws-credentials"], env=env, capture_output=True, text=True, timeout=120)


def test_sts_down_fails_clearly_and_the_next_call_after_recovery_works(hub, platform):
    _, env = start(hub, "dana", team="team-nlp")
    platform.stop_component("s3")
    try:
        down = credential_process(env)
    finally:
        platform.start_component("s3")
    assert (down.returncode, down.stdout) == (1, "")
    assert down.stderr == (f"mlplatform-aws-credentials: the hub refused S3 credentials (503): STS at "
                           f"{platform.s3_url} is unreachable: EndpointConnectionError\n")
    hub_log = platform.logs / "hub.log"
    assert f"No S3 credentials for dana: STS at {platform.s3_url} is unreachable" in hub_log.read_text()

    up = credential_process(env)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["Version"] == 1


def test_sts_refusal_names_the_reason_without_the_token(platform):
    broker = S3CredentialBroker(platform.load_catalog())
    forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"

    async def token():
        return forged

    with pytest.raises(CredentialsUnavailable) as e:
        asyncio.run(broker.credentials("alice", "team-vision", token))
    assert e.value.status == 502
    assert str(e.value).startswith("STS refused credentials for alice: ")
    assert forged not in str(e.value) and "eyJ" not in str(e.value)


LOG_RUN = """
import mlflow
with mlflow.start_run() as run:
    mlflow.log_metric("loss", 0.1)
    mlflow.log_text("trained on the team's data", "notes/card.md")
print(run.info.run_id, run.info.experiment_id, run.info.artifact_uri)
"""


def test_notebook_runs_land_in_the_team_experiment_with_artifacts_under_the_team_prefix(platform, alice_server):
    _, env = alice_server
    out = subprocess.run([sys.executable, "-c", LOG_RUN], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    run_id, experiment_id, artifact_uri = out.stdout.split()[-3:]
    root = f"s3://platform/teams/team-vision/mlflow/{experiment_id}"  # the team workspace's root, then the experiment
    assert artifact_uri == f"{root}/{run_id}/artifacts"
    experiment = admin_api(platform, "team-vision").get(f"{platform.mlflow_url}/api/2.0/mlflow/experiments/get",
                                                        params={"experiment_id": experiment_id}).json()["experiment"]
    assert (experiment["name"], experiment["artifact_location"]) == ("team-vision", root)
    # Written by the notebook with its own credentials, read back here with the S3 server's admin keys.
    keys = json.loads((platform.data_dir / "secrets.json").read_text())
    admin = boto3.client("s3", endpoint_url=platform.s3_url, region_name="us-east-1",
                         aws_access_key_id=keys["s3_access_key"], aws_secret_access_key=keys["s3_secret_key"])
    key = f"teams/team-vision/mlflow/{experiment_id}/{run_id}/artifacts/notes/card.md"
    assert admin.get_object(Bucket="platform", Key=key)["Body"].read() == b"trained on the team's data"


AWS_CLI_AND_PANDAS = """
import subprocess, sys
import pandas as pd
path = "s3://platform/users/alice/frame.csv"
pd.DataFrame({"x": [1, 2, 3]}).to_csv(path, index=False)
print("pandas:", pd.read_csv(path)["x"].sum())
try:
    pd.DataFrame({"x": [1]}).to_csv("s3://platform/users/bob/frame.csv", index=False)
except PermissionError as e:
    print("pandas denied:", type(e).__name__)
"""


def test_aws_cli_and_pandas_s3_paths_use_the_same_credentials(platform, alice_server, tmp_path):
    _, env = alice_server
    out = subprocess.run([sys.executable, "-c", AWS_CLI_AND_PANDAS], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["pandas: 6", "pandas denied: PermissionError"]

    local = tmp_path / "report.txt"
    local.write_text("from the AWS CLI")
    aws = [str(Path(sys.executable).parent / "aws"), "s3"]
    put = subprocess.run([*aws, "cp", str(local), "s3://platform/users/alice/report.txt"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert put.returncode == 0, put.stderr
    listing = subprocess.run([*aws, "ls", "s3://platform/users/alice/"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert "report.txt" in listing.stdout and "frame.csv" in listing.stdout
    denied = subprocess.run([*aws, "cp", str(local), "s3://platform/users/bob/report.txt"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert denied.returncode != 0 and "AccessDenied" in denied.stderr
