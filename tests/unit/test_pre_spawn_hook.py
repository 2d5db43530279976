"""The spawners' pre-spawn step: the team's MLflow experiment, then the deployment's own pre_spawn_hook.

MLflow is unreachable here (a closed port): the server must start anyway. With a real MLflow, see
tests/integration/test_spawn.py.
"""

import logging
import socket

from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.mlflow_access.tokens import generate_key_pair
from hub_config.spawners.local import LocalPlatformSpawner

from ..support.hub_user import User

A100 = {"team": "team-vision", "profile": "gpu-a100", "gpu_type": "a100", "gpu_count": 1}


@pytest.fixture
def catalog_without_mlflow(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["mlflow"]["tracking_uri"] = f"http://127.0.0.1:{closed}"
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def spawner(catalog_file: str, hook) -> LocalPlatformSpawner:
    # The hub's MLflow signing key: provisioning gets as far as calling MLflow.
    key = Path(catalog_file).parent / "signing.pem"
    generate_key_pair(key, key.with_suffix(".pub.pem"))
    return LocalPlatformSpawner(user=User("alice"), catalog_file=catalog_file, pre_spawn_hook=hook,
                                log=logging.getLogger("test-spawner"),
                                config=Config({"MlflowAccess": {"signing_key_file": str(key)}}))


async def test_unreachable_mlflow_is_a_warning_and_the_configured_hook_still_runs(catalog_without_mlflow, caplog):
    ran = []
    alice = spawner(catalog_without_mlflow, lambda s: ran.append(s.devices))
    await alice._run_apply_user_options(A100)
    with caplog.at_level(logging.WARNING, "test-spawner"):
        await alice.run_pre_spawn_hook()
    assert ran == [("0",)]  # the hook ran, with the GPUs still held for the start
    [warning] = [r.getMessage() for r in caplog.records if r.name == "test-spawner"]
    assert warning.startswith("No MLflow workspace or experiment for team team-vision: MLflow at http://127.0.0.1:")
    assert "is unreachable" in warning
    alice.release()


async def test_a_failing_configured_hook_gives_the_gpus_back(catalog_without_mlflow):
    def refuse(spawner):
        raise RuntimeError("no home directory")

    alice = spawner(catalog_without_mlflow, refuse)
    await alice._run_apply_user_options(A100)
    assert alice.quota_snapshot().used == {"team-vision": {"a100": 1}}
    with pytest.raises(RuntimeError, match="no home directory"):
        await alice.run_pre_spawn_hook()
    assert alice.quota_snapshot().used == {}
