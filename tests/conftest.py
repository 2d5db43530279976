"""Fixtures shared by the suite: one real local platform per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub_config.local.platform import LocalPlatform, Ports

from .support.hub import HubClient
from .support.mlflow_access import platform_token
from .support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)
from .support.ray_head import fresh_ray_head

# jp_fetch and a real jupyter server with the extension, for the REST API tests.
pytest_plugins = ["pytest_jupyter.jupyter_server"]

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
# Ports of the test platform; a base other than the local platform's, so both can run side by side.
# Every test's ports stay below Linux's ephemeral range (32768-60999), where Ray and every client connection
# pick theirs: a port there may be taken for a moment by anything (tests/unit/test_test_ports.py).
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800"))
# The Ray port of a notebook's local head in the modules that share one (see `shared_ray_head`): 200 ports of its
# own, not the platform's (BASE + 600), whose head other modules start while the shared one runs.
SHARED_RAY_PORT = BASE + 4000
# Access tokens expire quickly in tests, so refresh-before-spawn is exercised for real.
ACCESS_TOKEN_TTL = 8
# Team membership is read again from the realm after this many seconds (the hub's default is 60), so the
# test of a user moved out of a team waits less.
MEMBERSHIP_MAX_AGE = 15


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # Remember each phase's outcome so the browser's page fixture can screenshot a failed test.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def platform(tmp_path_factory):
    """The local platform (dev OIDC provider, MLflow, JupyterHub) started for the whole session."""
    data_dir = tmp_path_factory.mktemp("platform")
    # The service's database named here: the tests' own MLPLATFORM_SERVICE_DATABASE_URL (support/governance.py, for
    # spawners made in this process) must not reach a hub started or restarted during a test.
    local = LocalPlatform(data_dir=data_dir, ports=Ports(hub=BASE, sso=BASE + 80, mlflow=BASE + 500),
                          access_token_ttl=ACCESS_TOKEN_TTL,
                          hub_options={"S3CredentialBroker.membership_max_age": MEMBERSHIP_MAX_AGE},
                          extra_env={"MLPLATFORM_SERVICE_DATABASE_URL": f"sqlite:///{data_dir / 'platform.sqlite'}"})
    # The catalog reads its ports from the environment, here as in `mlplatform-local up`.
    os.environ.update(MLPLATFORM_SSO_PORT=str(local.ports.sso), MLPLATFORM_MLFLOW_PORT=str(local.ports.mlflow),
                      MLPLATFORM_S3_PORT=str(local.ports.s3))
    local.start()
    # The test process is the platform identity to MLflow (see support/mlflow_access.py); the
    # platform's own processes were started without it.
    os.environ["MLFLOW_TRACKING_TOKEN"] = platform_token(local)
    try:
        yield local
    finally:
        local.stop()
        # Keep the logs for CI's artifacts and for the no-secrets assertions' failure messages.
        ARTIFACTS.mkdir(exist_ok=True)
        for log in local.logs.glob("*.log"):
            (ARTIFACTS / log.name).write_bytes(log.read_bytes())


@pytest.fixture
def hub(platform):
    """Log users in through the provider's form; stops every server they started at teardown."""
    client = HubClient(platform)
    yield client
    client.stop_all()


@pytest.fixture(scope="session")
def shared_ray_head(platform):
    """One local Ray head (SHARED_RAY_PORT, the default directory) for the modules that serve on it, each in its
    turn through support/ray_head.module_on_shared_head: started by the session's first deploy, stopped with
    no process left at the session's end."""
    with fresh_ray_head(SHARED_RAY_PORT) as head:
        yield head
