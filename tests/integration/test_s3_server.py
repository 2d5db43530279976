"""SeaweedFS as the local S3 server: its STS trusts only the dev OIDC provider's ID tokens, and the
S3 server itself enforces the role policy and the session policy (no mocks: real tokens, real server)."""

import base64
import json
import os
import time
from pathlib import Path

import boto3
import jwt
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa

from hub_config.local import seaweedfs
from hub_config.local.platform import LocalPlatform, Ports
from hub_config.s3_policy import session_policy
from mlplatform_service.evidence import evidence_prefix

from ..support.hub import HubClient

# The short-lived platform's ports: clear of the session's, the launcher test's (+2000) and those of
# sessions whose base is 1000 or 3000 apart; under the ephemeral range (32768) for the default base.
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 2600
BUCKET = "platform"


@pytest.fixture(scope="module")
def catalog(platform):
    return platform.load_catalog()


def id_token(hub: HubClient, name: str) -> str:
    """A real ID token of `name`: logs them in through the provider's form, read from auth_state."""
    hub.login(name)
    return hub.login("admin").api("GET", f"/users/{name}").json()["auth_state"]["id_token"]


def claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def assume(platform, catalog, token: str, policy: dict | None = None) -> dict:
    sts = boto3.client("sts", endpoint_url=platform.s3_url, region_name=catalog.storage.s3.region,
                       aws_access_key_id="unused", aws_secret_access_key="unused")
    extra = {"Policy": json.dumps(policy)} if policy else {}
    return sts.assume_role_with_web_identity(RoleArn=catalog.storage.s3.role_arn, RoleSessionName="notebook",
                                             WebIdentityToken=token, DurationSeconds=900, **extra)["Credentials"]


def s3_client(platform, creds: dict):
    return boto3.client("s3", endpoint_url=platform.s3_url, region_name="us-east-1",
                        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


def error(call, *args, **kwargs) -> str:
    """The S3 server's error code for a call, or "ok"."""
    try:
        call(*args, **kwargs)
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


def put_get(s3, key: str) -> tuple[str, str]:
    return (error(s3.put_object, Bucket=BUCKET, Key=key, Body=b"data"),
            error(lambda: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))


def test_alice_reaches_her_prefix_and_her_team_prefix_only(platform, catalog, hub):
    token = id_token(hub, "alice")
    assert claims(token)["groups"] == ["/team-vision"]
    s3 = s3_client(platform, assume(platform, catalog, token, session_policy(catalog, "alice", "team-vision")))

    for key in ("users/alice/notes.txt", "teams/team-vision/shared.txt"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"alice was here")
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"alice was here"
    assert put_get(s3, "users/bob/notes.txt") == ("AccessDenied", "AccessDenied")
    assert put_get(s3, "teams/team-nlp/shared.txt") == ("AccessDenied", "AccessDenied")

    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="users/alice/")
    assert "users/alice/notes.txt" in [o["Key"] for o in listed["Contents"]]
    assert error(s3.list_objects_v2, Bucket=BUCKET, Prefix="users/bob/") == "AccessDenied"
    assert error(s3.list_objects_v2, Bucket=BUCKET) == "AccessDenied"


def test_without_a_session_policy_the_role_policy_still_keeps_alice_out(platform, catalog, hub):
    s3 = s3_client(platform, assume(platform, catalog, id_token(hub, "alice")))
    assert put_get(s3, "users/alice/role-only.txt") == ("ok", "ok")
    assert put_get(s3, "users/bob/role-only.txt") == ("AccessDenied", "AccessDenied")
    assert put_get(s3, "teams/team-nlp/role-only.txt") == ("AccessDenied", "AccessDenied")
    assert error(s3.list_objects_v2, Bucket=BUCKET, Prefix="users/bob/") == "AccessDenied"


def test_session_policy_narrows_a_member_of_two_teams_to_one(platform, catalog, hub):
    token = id_token(hub, "dana")
    assert sorted(claims(token)["groups"]) == ["/team-nlp", "/team-vision"]
    # The role would let dana into both teams; the session for a team-vision server does not.
    both = s3_client(platform, assume(platform, catalog, token))
    assert put_get(both, "teams/team-nlp/dana.txt") == ("ok", "ok")
    vision = s3_client(platform, assume(platform, catalog, token, session_policy(catalog, "dana", "team-vision")))
    assert put_get(vision, "teams/team-vision/dana.txt") == ("ok", "ok")
    assert put_get(vision, "teams/team-nlp/dana.txt") == ("AccessDenied", "AccessDenied")
    assert error(vision.list_objects_v2, Bucket=BUCKET, Prefix="teams/team-nlp/") == "AccessDenied"


def test_multipart_upload_in_own_prefix_only(platform, catalog, hub):
    s3 = s3_client(platform, assume(platform, catalog, id_token(hub, "alice"),
                                    session_policy(catalog, "alice", "team-vision")))
    key = "users/alice/big.bin"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 1024)["ETag"]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload)["Parts"]] == [1]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    aborted = s3.create_multipart_upload(Bucket=BUCKET, Key=key + ".2")["UploadId"]
    s3.abort_multipart_upload(Bucket=BUCKET, Key=key + ".2", UploadId=aborted)
    s3.delete_object(Bucket=BUCKET, Key=key)
    assert error(s3.create_multipart_upload, Bucket=BUCKET, Key="users/bob/big.bin") == "AccessDenied"


def test_tokens_not_signed_by_the_provider_are_refused(platform, catalog, hub):
    token = id_token(hub, "alice")
    header, payload, signature = token.split(".")
    as_bob = base64.urlsafe_b64encode(json.dumps({**claims(token), "preferred_username": "bob"}).encode())
    tampered = f"{header}.{as_bob.rstrip(b'=').decode()}.{signature}"
    # Same claims and key id, signed with another RSA key.
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
    forged = jwt.encode(claims(token), other_key, algorithm="RS256", headers={"kid": kid})
    for bad in (tampered, forged):
        with pytest.raises(ClientError) as refused:
            assume(platform, catalog, bad)
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
        assert "signature is invalid" in refused.value.response["Error"]["Message"]


def test_the_platform_services_identity_reaches_the_platform_bucket_only(platform, catalog, hub):
    """The platform service's S3 identity (seaweedfs.s3_config): it reads every team's inference log, prunes
    it, writes drift reports; no other bucket, and no bucket administration."""
    creds = assume(platform, catalog, id_token(hub, "alice"))
    alice = s3_client(platform, creds)
    key = "teams/team-vision/inference-log/s3-identity-test/date=2026-12-01/hour=10/x.parquet"
    assert error(alice.put_object, Bucket=BUCKET, Key=key, Body=b"rows") == "ok"
    secrets = json.loads((platform.data_dir / "secrets.json").read_text())
    service = s3_client(platform, {"AccessKeyId": secrets["s3_service_access_key"],
                                   "SecretAccessKey": secrets["s3_service_secret_key"], "SessionToken": None})
    listed = service.list_objects_v2(Bucket=BUCKET, Prefix="teams/team-vision/inference-log/s3-identity-test/")
    assert [o["Key"] for o in listed["Contents"]] == [key]
    assert service.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"rows"
    assert error(service.delete_object, Bucket=BUCKET, Key=key) == "ok"
    assert error(service.create_bucket, Bucket="service-made") == "AccessDenied"
    assert error(service.list_objects_v2, Bucket="service-made") in ("AccessDenied", "NoSuchBucket")


def test_no_team_reaches_the_gateways_evidence_and_the_platform_service_does(platform, catalog, hub):
    """The rollout gateway's evidence (mlplatform_service.evidence) is under the platform's prefix: a team member's
    credentials, with or without the session policy, can neither forge nor read it; the service writes and reads
    it with its own identity."""
    key = evidence_prefix("platform", "team-vision") + "inference-log/iris/date=2026-12-04/hour=08/x.parquet"
    token = id_token(hub, "alice")
    for policy in (None, session_policy(catalog, "alice", "team-vision")):
        alice = s3_client(platform, assume(platform, catalog, token, policy))
        assert put_get(alice, key) == ("AccessDenied", "AccessDenied")
        assert error(alice.list_objects_v2, Bucket=BUCKET, Prefix="platform/") == "AccessDenied"
    secrets = json.loads((platform.data_dir / "secrets.json").read_text())
    service = s3_client(platform, {"AccessKeyId": secrets["s3_service_access_key"],
                                   "SecretAccessKey": secrets["s3_service_secret_key"], "SessionToken": None})
    assert put_get(service, key) == ("ok", "ok")
    assert error(service.delete_object, Bucket=BUCKET, Key=key) == "ok"


def test_s3_log_holds_no_credentials(platform, catalog, hub):
    token = id_token(hub, "alice")
    creds = assume(platform, catalog, token)
    put_get(s3_client(platform, creds), "users/bob/secret-test.txt")  # denied calls are logged, if any
    secrets = json.loads((platform.data_dir / "secrets.json").read_text())
    log = (platform.logs / "s3.log").read_text(errors="replace")
    values = {"ID token": token, "secret key": creds["SecretAccessKey"], "session token": creds["SessionToken"],
              **{name: secrets[name] for name in ("s3_access_key", "s3_secret_key", "s3_sts_signing_key",
                                                  "s3_service_access_key", "s3_service_secret_key")}}
    assert [name for name, value in values.items() if value in log] == []


# --- a second platform whose ID tokens live 5 s: expiry, and a restart keeping bucket and objects ----
ID_TOKEN_TTL = 5


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    local = LocalPlatform(data_dir=tmp_path_factory.mktemp("short-lived"), id_token_ttl=ID_TOKEN_TTL,
                          ports=Ports(hub=BASE, sso=BASE + 80, mlflow=BASE + 500))
    local.start()
    try:
        yield local
    finally:
        local.stop()


def test_expired_id_token_is_refused(short_lived):
    catalog = short_lived.load_catalog()
    token = id_token(HubClient(short_lived), "alice")
    assert claims(token)["exp"] - claims(token)["iat"] == ID_TOKEN_TTL
    assume(short_lived, catalog, token)  # fresh: accepted
    time.sleep(max(0.0, claims(token)["exp"] + 1 - time.time()))
    with pytest.raises(ClientError) as refused:
        assume(short_lived, catalog, token)
    assert refused.value.response["Error"]["Code"] == "ExpiredTokenException"


def test_restart_keeps_the_bucket_and_objects_and_leaves_no_sockets(short_lived):
    catalog = short_lived.load_catalog()
    s3 = s3_client(short_lived, assume(short_lived, catalog, id_token(HubClient(short_lived), "alice")))
    s3.put_object(Bucket=BUCKET, Key="users/alice/kept.txt", Body=b"kept")

    short_lived.stop()
    assert [p for port in seaweedfs.ports(short_lived.ports.s3).values()
            for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")] == []
    short_lived.start()  # creating the bucket again must not fail

    s3 = s3_client(short_lived, assume(short_lived, catalog, id_token(HubClient(short_lived), "alice")))
    assert s3.get_object(Bucket=BUCKET, Key="users/alice/kept.txt")["Body"].read() == b"kept"
