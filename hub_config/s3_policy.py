"""S3 access policies derived from the catalog: what a user's short-lived credentials may touch.

Two layers, both enforced by the S3 server (AWS, MinIO or SeaweedFS), never by our code:
- the role policy (attached to the catalog's role, set up once by the platform engineer or the local
  platform) allows each user their own prefix and each team member their team's prefix, using the
  claims of the OIDC ID token (`${jwt:preferred_username}`, `jwt:groups`);
- the session policy (sent with every AssumeRoleWithWebIdentity) narrows one set of credentials to
  the user's prefix and the prefix of the team their server runs for.
"""

from __future__ import annotations

from mlplatform_core.catalog import Catalog

OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                  "s3:ListMultipartUploadParts"]


def _statements(bucket: str, prefix: str, condition: dict | None = None) -> list[dict]:
    extra = {"Condition": condition} if condition else {}
    return [
        {"Effect": "Allow", "Action": OBJECT_ACTIONS, "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"], **extra},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"],
         "Condition": {**(condition or {}), "StringLike": {"s3:prefix": [f"{prefix}*"]}}},
    ]


def session_policy(catalog: Catalog, username: str, team: str) -> dict:
    """The inline session policy of one user's credentials for a server of `team`."""
    bucket = catalog.storage.s3.bucket
    user_prefix, team_prefix = catalog.storage.s3.prefixes(username, team)
    return {"Version": "2012-10-17",
            "Statement": _statements(bucket, user_prefix) + _statements(bucket, team_prefix)}


def role_policy(catalog: Catalog) -> dict:
    """The role's permission policy: own prefix by username claim, team prefixes by group claim."""
    bucket = catalog.storage.s3.bucket
    statements = _statements(bucket, catalog.storage.s3.user_prefix.format(username="${jwt:preferred_username}",
                                                                           team="*"))
    for name, team in catalog.teams.items():
        member = {"ForAnyValue:StringEquals": {"jwt:groups": [f"/{team.group}", team.group]}}
        statements += _statements(bucket, catalog.storage.s3.team_prefix.format(username="*", team=name), member)
    return {"Version": "2012-10-17", "Statement": statements}
