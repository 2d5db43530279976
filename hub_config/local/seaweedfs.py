"""SeaweedFS as the local platform's S3 server, with an STS that trusts the dev OIDC provider.

Notebooks get short-lived per-user credentials from `AssumeRoleWithWebIdentity` (served on the S3
port itself) with their ID token; the role's policy (hub_config.s3_policy.role_policy) and the
session policy sent with each call are enforced by SeaweedFS. A static admin identity exists only
for the platform itself, to create the catalog's bucket.

Ports, every one explicit and on 127.0.0.1, all derived from the S3 port P (default 18300):
    P      S3 API and STS (the only port clients use)    P + 1  S3 gRPC
    P + 2  master HTTP                                    P + 3  master gRPC
    P + 4  volume server HTTP                             P + 5  volume server gRPC
    P + 6  filer HTTP                                     P + 7  filer gRPC
SeaweedFS also listens on unix sockets it always puts in /tmp, named after those ports
(/tmp/seaweedfs-<component>[-grpc]-<port>.sock); `remove_sockets` cleans them after a stop.

The ID token's signature is checked against the provider's JWKS, fetched through discovery when
the first token is validated (not at start), so SeaweedFS may start before the provider.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from mlplatform_core.catalog import Catalog

from ..s3_policy import role_policy

PROVIDER = "platform-oidc"
ROLE_POLICY = "platform-user-policy"
SOCKET_DIR = Path("/tmp")


def ports(s3_port: int) -> dict[str, int]:
    """Every port SeaweedFS listens on, by component, derived from the S3 port."""
    names = ["s3", "s3 gRPC", "master", "master gRPC", "volume", "volume gRPC", "filer", "filer gRPC"]
    return {name: s3_port + i for i, name in enumerate(names)}


def iam_config(catalog: Catalog, signing_key: str) -> dict:
    """The advanced IAM config (-s3.iam.config): STS, the OIDC provider, the role and its policy."""
    s3 = catalog.storage.s3
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": PROVIDER}, "Action": ["sts:AssumeRoleWithWebIdentity"],
        "Condition": {"StringEquals": {"oidc:aud": catalog.sso.client_id}}}]}
    return {
        # maxSessionLength caps every session; DurationSeconds may ask for 900 s up to this.
        "sts": {"tokenDuration": "1h", "maxSessionLength": "12h", "issuer": "seaweedfs-sts", "signingKey": signing_key},
        # No roleMapping: with one, S3 would accept raw ID tokens as Bearer and skip session policies.
        "providers": [{"name": PROVIDER, "type": "oidc", "enabled": True, "config": {
            "issuer": catalog.sso.realm_url, "clientId": catalog.sso.client_id, "jwksCacheTTLSeconds": 300}}],
        "policy": {"defaultEffect": "Deny"},
        # A role with maxSessionDuration under 3600 is silently dropped by SeaweedFS 4.48.
        "roles": [{"roleName": s3.role_arn.rsplit("/", 1)[-1], "roleArn": s3.role_arn, "maxSessionDuration": 43200,
                   "trustPolicy": trust, "attachedPolicies": [ROLE_POLICY]}],
        "policies": [{"name": ROLE_POLICY, "document": role_policy(catalog)}],
    }


def s3_config(access_key: str, secret_key: str, service_keys: tuple[str, str] | None = None,
              bucket: str | None = None) -> dict:
    """The static identities (-s3.config): the platform's admin, used to create the bucket; and with
    `service_keys` the platform service's in `bucket`: it reads the teams' inference logs (rollouts), deletes
    their old hours (retention) and writes drift reports into the runs of the candidates it promotes."""
    admin = {"name": "platform-admin", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
    identities = [admin]
    if service_keys:
        identities.append({"name": "platform-service",
                           "credentials": [{"accessKey": service_keys[0], "secretKey": service_keys[1]}],
                           "actions": [f"Read:{bucket}", f"List:{bucket}", f"Write:{bucket}"]})
    return {"identities": identities}


def write_config(config_dir: Path, catalog: Catalog, secrets: dict[str, str]) -> None:
    """Write iam.json and s3.json (both hold secrets: mode 0600), read by SeaweedFS only at start."""
    config_dir.mkdir(parents=True, exist_ok=True)
    for name, config in [("iam.json", iam_config(catalog, secrets["s3_sts_signing_key"])),
                         ("s3.json", s3_config(secrets["s3_access_key"], secrets["s3_secret_key"],
                                               _service_keys(secrets), catalog.storage.s3.bucket))]:
        path = config_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)


def _service_keys(secrets: dict[str, str]) -> tuple[str, str] | None:
    if secrets.get("s3_service_access_key"):
        return secrets["s3_service_access_key"], secrets["s3_service_secret_key"]
    return None


def weed_command(weed: Path, config_dir: Path, s3_port: int) -> list[str]:
    """`weed server` with master, volume, filer and S3 on loopback; config in `config_dir`, data under it."""
    p = ports(s3_port)
    # -logtostderr: otherwise it also writes log files into $TMPDIR.
    return [str(weed), "-logtostderr", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={config_dir / 'data'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master gRPC']}",
            # A restart takes ~12 s with the default election timeout.
            "-master.electionTimeout=1s", "-master.volumeSizeLimitMB=256", "-master.telemetry=false",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume gRPC']}", "-volume.max=20",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer gRPC']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3 gRPC']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config_dir / 's3.json'}", f"-s3.iam.config={config_dir / 'iam.json'}"]


def remove_sockets(s3_port: int) -> None:
    """Remove the unix sockets SeaweedFS leaves in /tmp when killed (its graceful stop takes ~26 s)."""
    for port in ports(s3_port).values():
        for sock in SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


def admin_client(url: str, region: str, secrets: dict[str, str]):
    return boto3.client("s3", endpoint_url=url, region_name=region, aws_access_key_id=secrets["s3_access_key"],
                        aws_secret_access_key=secrets["s3_secret_key"],
                        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))


def ensure_bucket(url: str, region: str, bucket: str, secrets: dict[str, str], timeout: float) -> None:
    """Create `bucket` with the admin identity unless an earlier start did; retried until the filer is up."""
    client = admin_client(url, region, secrets)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            return
        except ClientError as e:
            if e.response["Error"]["Code"] in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            error = e
        except BotoCoreError as e:
            error = e
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not create bucket {bucket!r} at {url}: {error}")
        time.sleep(0.3)
