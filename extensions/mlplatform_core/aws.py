"""The AWS config of notebook servers: no keys, a `credential_process` that asks the hub's broker."""

from __future__ import annotations

import shlex
from importlib.resources import files
from pathlib import Path

AWS_CONFIG = Path(str(files(__package__).joinpath("aws_config")))
CREDENTIAL_PROCESS = "mlplatform-aws-credentials"  # the console script (setup.cfg)


def aws_config_text(credential_process: str = CREDENTIAL_PROCESS) -> str:
    """The packaged config, its credential process named by `credential_process`: the bare name (looked up
    on PATH, as on Kubernetes, whose images install it in /usr/local/bin) or an absolute path (the local
    platform's, so that a shell that changed PATH still finds it)."""
    line = f"credential_process = {CREDENTIAL_PROCESS}\n"
    text = AWS_CONFIG.read_text()
    if line not in text:
        raise RuntimeError(f"{AWS_CONFIG} has no line {line!r}: a broken install of mlplatform_core")
    # The SDKs split the value as a shell would (botocore's compat_shell_split): a path with spaces is quoted.
    return text.replace(line, f"credential_process = {shlex.quote(credential_process)}\n")
