"""The MLflow tokens the hub signs (RS256 JWTs) and the MLflow roles they carry.

A token says who (`sub`), for which server's team (`team`), and which managed roles the user holds
in which workspace (`roles`: "<team>/mlplatform-members", "<team>/mlplatform-readers"), as the
catalog and the user's groups say now. MLflow's authorization function (server.py) verifies it with
the public key and applies the roles; nothing else is trusted from the caller. The platform identity
(`mlplatform-platform`, MLflow's admin) gets tokens of type `platform`, minted only inside the hub.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import jwt
from mlplatform_core.catalog import Catalog
from mlplatform_core.mlflow_token import AUDIENCE

ISSUER = "mlplatform-hub"
PLATFORM_IDENTITY = "mlplatform-platform"
MEMBERS = "mlplatform-members"  # the team's own experiments and models: create, edit (a creator may delete)
READERS = "mlplatform-readers"  # another team's, when the catalog lets other teams read
MANAGED_ROLES = (MEMBERS, READERS)
ALGORITHM = "RS256"


def mlflow_roles(catalog: Catalog, teams: list[str]) -> list[str]:
    """The managed roles of a member of `teams`: members of those, readers of the others that allow it."""
    roles = [f"{team}/{MEMBERS}" for team in teams]
    roles += [f"{name}/{READERS}" for name, team in catalog.teams.items()
              if name not in teams and catalog.mlflow.other_teams(team) == "read"]
    return sorted(roles)


class TokenSigner:
    """Mints MLflow tokens with the hub's private key (a PEM file only the hub reads)."""

    def __init__(self, private_key_file: str | os.PathLike):
        self.private_key_file = Path(private_key_file)
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = self.private_key_file.read_bytes()
        return self._key

    def mint(self, username: str, *, roles: list[str], team: str | None, lifetime: float) -> tuple[str, float]:
        """(token, expires_at) for a user's server."""
        return self._mint({"sub": username, "typ": "user", "roles": roles, **({"team": team} if team else {})},
                          lifetime)

    def platform_token(self, lifetime: float = 300) -> str:
        """A token of the platform identity (MLflow admin), for the hub's own calls."""
        return self._mint({"sub": PLATFORM_IDENTITY, "typ": "platform", "roles": []}, lifetime)[0]

    def _mint(self, claims: dict, lifetime: float) -> tuple[str, float]:
        now = time.time()
        expires_at = now + lifetime
        claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": int(now), "exp": int(expires_at), "jti": uuid.uuid4().hex,
                  **claims}
        return jwt.encode(claims, self.key, algorithm=ALGORITHM), int(expires_at)


def generate_key_pair(private_key_file: Path, public_key_file: Path) -> None:
    """A new RS256 key pair, unless the private key exists: private 0600, public 0644."""
    if private_key_file.exists():
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public_key_file.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
