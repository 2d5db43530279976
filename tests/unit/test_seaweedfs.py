"""SeaweedFS configuration derived from the catalog: IAM (STS, provider, role, policy), identities, ports."""

from pathlib import Path

from hub_config.catalog import DEFAULT_CATALOG
from mlplatform_core.catalog import load_catalog
from hub_config.local import seaweedfs
from hub_config.local.platform import Ports
from hub_config.s3_policy import role_policy

CATALOG = load_catalog(DEFAULT_CATALOG, environ={})  # the bundled catalog with its default ports


def test_iam_config_of_the_default_catalog():
    assert seaweedfs.iam_config(CATALOG, "c2lnbmluZw==") == {
        "sts": {"tokenDuration": "1h", "maxSessionLength": "12h", "issuer": "seaweedfs-sts",
                "signingKey": "c2lnbmluZw=="},
        "providers": [{"name": "platform-oidc", "type": "oidc", "enabled": True, "config": {
            "issuer": "http://127.0.0.1:18080/realms/platform", "clientId": "jupyterhub", "jwksCacheTTLSeconds": 300}}],
        "policy": {"defaultEffect": "Deny"},
        "roles": [{
            "roleName": "platform-user", "roleArn": "arn:aws:iam::role/platform-user", "maxSessionDuration": 43200,
            "trustPolicy": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Federated": "platform-oidc"},
                "Action": ["sts:AssumeRoleWithWebIdentity"],
                "Condition": {"StringEquals": {"oidc:aud": "jupyterhub"}}}]},
            "attachedPolicies": ["platform-user-policy"]}],
        "policies": [{"name": "platform-user-policy", "document": role_policy(CATALOG)}],
    }


def test_the_role_policy_scopes_users_by_token_claims_never_by_session_name():
    text = str(role_policy(CATALOG))
    assert "${jwt:preferred_username}" in text and "aws:username" not in text


def test_s3_config_has_the_admin_identity_and_the_services():
    admin = {"name": "platform-admin", "credentials": [{"accessKey": "AK", "secretKey": "SK"}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
    assert seaweedfs.s3_config("AK", "SK") == {"identities": [admin]}
    assert seaweedfs.s3_config("AK", "SK", ("SAK", "SSK"), "platform") == {"identities": [admin, {
        "name": "platform-service", "credentials": [{"accessKey": "SAK", "secretKey": "SSK"}],
        "actions": ["Read:platform", "List:platform", "Write:platform"]}]}


def test_every_port_derives_from_the_s3_port():
    assert seaweedfs.ports(18300) == {"s3": 18300, "s3 gRPC": 18301, "master": 18302, "master gRPC": 18303,
                                      "volume": 18304, "volume gRPC": 18305, "filer": 18306, "filer gRPC": 18307}


def test_weed_command_sets_every_port_and_binds_loopback(tmp_path):
    cmd = seaweedfs.weed_command(Path("weed"), tmp_path, 18300)
    flags = dict(arg.lstrip("-").split("=", 1) for arg in cmd if "=" in arg)
    assert {int(flags[f]) for f in flags if f.endswith(("port", "port.grpc"))} == set(range(18300, 18308))
    assert flags["s3.port.iceberg"] == flags["s3.port.lance"] == "0"
    assert flags["ip"] == flags["ip.bind"] == "127.0.0.1"
    assert flags["s3.iam.config"] == str(tmp_path / "iam.json") and flags["s3.config"] == str(tmp_path / "s3.json")
    assert "-logtostderr" in cmd  # no log files in $TMPDIR


def test_config_files_are_private(tmp_path):
    secrets = {"s3_access_key": "AK", "s3_secret_key": "SK", "s3_sts_signing_key": "c2lnbmluZw=="}
    seaweedfs.write_config(tmp_path, CATALOG, secrets)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"iam.json": 0o600, "s3.json": 0o600}


def test_platform_ports_follow_the_hub_unless_set():
    assert Ports().s3 == 18300
    assert Ports(hub=28000).s3 == 28300
    assert Ports(hub=28000, s3=19000).s3 == 19000
    assert sorted(Ports().all().values()) == [18000, 18001, 18080, 18081, 18082, 18083, *range(18300, 18308), 18500]
