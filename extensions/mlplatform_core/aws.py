"""The AWS config of notebook servers: no keys, a `credential_process` that asks the hub's broker."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

AWS_CONFIG = Path(str(files(__package__).joinpath("aws_config")))


def aws_config_text() -> str:
    return AWS_CONFIG.read_text()
