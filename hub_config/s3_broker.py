"""The S3 credential broker: per-user short-lived credentials from STS, cached until shortly before expiry.

The hub calls STS `AssumeRoleWithWebIdentity` with the user's OIDC ID token, the catalog's role and a
session policy limited to the user's prefix and their server's team prefix (hub_config/s3_policy.py).
The S3 server (AWS, MinIO, SeaweedFS) validates the token and enforces both the role's and the
session's policy. Credentials are cached per (user, team) and renewed `renew_before_seconds` before
they expire, so STS is called once per lifetime however often the notebook asks.

Team membership is the caller's to check on every request; the broker keeps when each user's groups
were last read from the realm (`confirm_membership`, at most `membership_max_age` old) and drops a
user's cached credentials for a team they left (`forget`).

The clock and the STS client are injectable, so expiry and renewal are testable without waiting.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

import boto3
import botocore
import botocore.config
import botocore.exceptions
from mlplatform_core.catalog import Catalog, cached_catalog
from traitlets import Int, Unicode, default
from traitlets.config import LoggingConfigurable

from .catalog import configured_catalog_path
from .s3_policy import session_policy


class CredentialsUnavailable(Exception):
    """STS could not issue credentials. The message is safe to show and log: it holds no token."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    # When they expire, by the broker's clock: issue time + the requested duration, which STS grants
    # exactly. Measured locally, so a skewed STS clock does not shorten or stretch the cache.
    expires_at: float

    @property
    def expiration(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, timezone.utc)

    def __repr__(self) -> str:  # never print secrets by accident
        return f"Credentials(access_key_id={self.access_key_id!r}, expiration={self.expiration.isoformat()})"

    def as_credential_process(self) -> dict:
        """The JSON a `credential_process` prints (read by boto3, the AWS CLI and s3fs)."""
        return {
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class S3CredentialBroker(LoggingConfigurable):
    renew_before_seconds = Int(
        1200,
        config=True,
        help="""
        Renew cached credentials this many seconds before they expire. Must be more than the AWS SDKs'
        own refresh window (botocore refreshes 15 minutes before expiry, and insists 10 minutes before),
        so a notebook that asks again always gets credentials it considers fresh.
        """,
    )

    membership_max_age = Int(
        60,
        config=True,
        help="""
        Seconds a user's team membership (their JupyterHub groups, from the realm's `groups` claim) may
        be old when S3 credentials are handed out. Older groups are read again from the realm first
        (the authenticator's `refresh_user`), so a user removed from a team's group gets no new
        credentials for its prefix after at most this long; credentials already issued stay valid at
        the S3 server until they expire. 0 reads the groups on every credential request.

            c.S3CredentialBroker.membership_max_age = 300
        """,
    )

    sts_timeout_seconds = Int(
        5,
        config=True,
        help="""
        Connect and read timeout of one STS call. A call is tried twice, so a hung STS is a 503 after
        about twice this: keep that well below the notebook credential process's wait for the hub
        (`mlplatform.aws_credentials.HUB_TIMEOUT_SECONDS`, 30 s), or the user sees a timeout instead of
        the hub's reason.

            c.S3CredentialBroker.sts_timeout_seconds = 5
        """,
    )

    session_name_prefix = Unicode("mlplatform-", config=True, help="Prefix of the STS RoleSessionName.")

    catalog_file = Unicode(
        config=True,
        help="""
        Platform catalog with the S3 settings (role, STS endpoint, bucket, prefixes, lifetime).
        Defaults to $MLPLATFORM_CATALOG, else the catalog bundled for the local platform.
        """,
    )

    @default("catalog_file")
    def _default_catalog_file(self):
        return configured_catalog_path()

    def __init__(self, catalog: Catalog | None = None, *, sts_client: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time, **kwargs):
        super().__init__(**kwargs)
        self.catalog = catalog or cached_catalog(self.catalog_file)
        self.clock = clock
        self._sts_client = sts_client or (lambda: self._default_sts)
        self._cache: dict[tuple[str, str], Credentials] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._membership_read: dict[str, float] = {}  # user → when their groups were last read from the realm
        self._membership_locks: dict[str, asyncio.Lock] = {}
        self.sts_calls = 0

    @cached_property
    def _default_sts(self):
        """One client for every call: a new boto3 session would load botocore's models from disk each time."""
        s3 = self.catalog.storage.s3
        # AssumeRoleWithWebIdentity is not signed: the ID token is the proof.
        config = botocore.config.Config(signature_version=botocore.UNSIGNED, connect_timeout=self.sts_timeout_seconds,
                                        read_timeout=self.sts_timeout_seconds, retries={"total_max_attempts": 2})
        return boto3.session.Session().client("sts", endpoint_url=s3.sts_endpoint_url, region_name=s3.region,
                                              config=config)

    def cached(self, username: str, team: str) -> Credentials | None:
        """Credentials still fresh enough to hand out, without calling STS."""
        creds = self._cache.get((username, team))
        if creds and creds.expires_at - self.renew_before_seconds > self.clock():
            return creds
        return None

    async def confirm_membership(self, username: str, refresh: Callable[[], Awaitable[None]]) -> None:
        """Await `refresh` (reads the user's groups from the realm) unless it ran within `membership_max_age`.

        A failed refresh raises and counts as no read: the next request tries again."""
        async with self._membership_locks.setdefault(username, asyncio.Lock()):  # one refresh for concurrent asks
            read = self._membership_read.get(username)
            if read is None or self.clock() - read >= self.membership_max_age:
                await refresh()
                self._membership_read[username] = self.clock()

    def forget(self, username: str, team: str) -> None:
        """Drop the cached credentials of `username` for `team` (they left it): none are handed out again."""
        if self._cache.pop((username, team), None) is not None:
            self.log.info("Dropped the cached S3 credentials of %s for team %s: no longer a member", username, team)

    async def credentials(self, username: str, team: str, id_token: Callable) -> Credentials:
        """Credentials for `username` working for `team`; `id_token` is an async callable giving a fresh ID token."""
        key = (username, team)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent asks for one user wait for one STS call
            creds = self.cached(username, team)
            if creds is None:
                token = await id_token()
                creds = await asyncio.to_thread(self._assume_role, username, team, token)
                self._cache[key] = creds
            return creds

    def _assume_role(self, username: str, team: str, id_token: str) -> Credentials:
        s3 = self.catalog.storage.s3
        self.sts_calls += 1
        issued = self.clock()
        try:
            answer = self._sts_client().assume_role_with_web_identity(
                RoleArn=s3.role_arn,
                RoleSessionName=f"{self.session_name_prefix}{username}"[:64],
                WebIdentityToken=id_token,
                Policy=json.dumps(session_policy(self.catalog, username, team)),
                DurationSeconds=s3.credentials_duration_seconds,
            )
        except botocore.exceptions.ClientError as e:
            error = e.response.get("Error", {})
            raise CredentialsUnavailable(502, f"STS refused credentials for {username}: {error.get('Code', '?')}: "
                                              f"{_first_line(error.get('Message', ''))}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise CredentialsUnavailable(503, f"STS at {s3.sts_endpoint_url or 'AWS'} is unreachable: "
                                              f"{type(e).__name__}") from None
        c = answer["Credentials"]
        creds = Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"],
                            issued + s3.credentials_duration_seconds)
        self.log.info("Issued S3 credentials %s for %s (team %s) until %s", creds.access_key_id, username, team,
                      creds.expiration.isoformat())
        return creds


def _first_line(text: str, limit: int = 200) -> str:
    # STS error messages can quote the request; keep them short and free of token material.
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit and "eyJ" not in line else line.split(":")[0][:limit]
