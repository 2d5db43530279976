"""The hub's S3 credential broker against the real hub, provider and S3 server (SeaweedFS with STS)."""

import asyncio
import json
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

from mlplatform_core.catalog import load_catalog
from hub_config.s3_broker import CredentialsUnavailable, S3CredentialBroker

from ..support.processes import server_process

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


def credentials_url(platform, user):
    return f"{platform.hub_url}/hub/api/mlplatform/s3-credentials/{user}"


@pytest.fixture
def alice_server(hub):
    alice = hub.login("alice")
    assert alice.start(profile="cpu").status_code in (201, 202)
    alice.wait_ready()
    return alice, server_process("alice")[1]


def as_server(env, url):
    return requests.get(url, headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"})


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


def test_only_the_user_and_admins_may_read_credentials(hub, platform, alice_server):
    _, env = alice_server
    r = as_server(env, credentials_url(platform, "bob"))
    assert (r.status_code, r.json()["message"]) == (403, "only bob and admins may read bob's S3 credentials")
    bob = hub.login("bob")
    assert bob.http.get(credentials_url(platform, "alice")).status_code == 403
    r = requests.get(credentials_url(platform, "alice"))
    assert r.status_code == 403 and "need authentication" in r.json()["message"]
    admin = hub.login("admin")
    assert admin.http.get(credentials_url(platform, "alice")).status_code == 200
    r = bob.http.get(credentials_url(platform, "bob"))
    assert (r.status_code, r.json()["message"]) == (
        409, "bob has no running server: S3 credentials are issued only to running servers; start one from the hub")


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
    catalog = load_catalog(platform.catalog)
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
    dana = hub.login("dana")
    assert dana.start(team="team-nlp", profile="cpu").status_code in (201, 202)
    dana.wait_ready()
    env = server_process("dana")[1]
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
    broker = S3CredentialBroker(load_catalog(platform.catalog))
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
    assert artifact_uri == f"s3://platform/teams/team-vision/mlflow/{run_id}/artifacts"
    experiment = requests.get(f"{platform.mlflow_url}/api/2.0/mlflow/experiments/get",
                              params={"experiment_id": experiment_id}).json()["experiment"]
    assert (experiment["name"], experiment["artifact_location"]) == ("team-vision",
                                                                     "s3://platform/teams/team-vision/mlflow")
    # Written by the notebook with its own credentials, read back here with the S3 server's admin keys.
    keys = json.loads((platform.data_dir / "secrets.json").read_text())
    admin = boto3.client("s3", endpoint_url=platform.s3_url, region_name="us-east-1",
                         aws_access_key_id=keys["s3_access_key"], aws_secret_access_key=keys["s3_secret_key"])
    key = f"teams/team-vision/mlflow/{run_id}/artifacts/notes/card.md"
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
