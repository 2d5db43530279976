"""What the end-to-end benches share: a fresh local platform on its own ports, alice logged in with her
CPU server running (`with alice_on_a_fresh_platform(38000) as (platform, alice, env, tmp): ...`)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub_config.local.platform import LocalPlatform, Ports  # noqa: E402
from tests.support.hub import PASSWORDS, UserSession  # noqa: E402
from tests.support.processes import server_process  # noqa: E402


@contextmanager
def alice_on_a_fresh_platform(port_base: int) -> Iterator[tuple[LocalPlatform, UserSession, dict[str, str], Path]]:
    """(the platform, alice's session, her server's environment, the platform's temp data dir); all stopped after."""
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-") as tmp:
        ports = Ports(hub=port_base, sso=port_base + 80, mlflow=port_base + 500)
        os.environ.update(MLPLATFORM_SSO_PORT=str(ports.sso), MLPLATFORM_S3_PORT=str(ports.s3),
                          MLPLATFORM_MLFLOW_PORT=str(ports.mlflow))
        platform = LocalPlatform(data_dir=Path(tmp), ports=ports)
        platform.start()
        alice = UserSession(platform.hub_url, "alice")
        try:
            alice.login(PASSWORDS["alice"])
            assert alice.start(profile="cpu").status_code in (201, 202)
            alice.wait_ready()
            # This platform's alice: other platforms on the machine (other sessions' tests) have an alice too.
            yield platform, alice, server_process("alice", platform.ports.hub_api)[1], Path(tmp)
        finally:
            alice.stop()
            platform.stop()
