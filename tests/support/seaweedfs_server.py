"""A throwaway SeaweedFS S3 server (admin identity only) with the catalog's bucket, for tests and benches
that need S3 of their own rather than the session platform's.

    with seaweedfs_server(tmp_dir, port_base, region, bucket) as (url, keys): ...
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.local import seaweedfs
from mlplatform_core.catalog import load_catalog


def free_block(start: int, size: int = 8, span: int = 200) -> int:
    """The first of `size` consecutive free ports, searched from `start` in steps of 10."""
    for port in range(start, start + span, 10):
        try:
            for p in range(port, port + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no {size} free ports from {start}")


@contextmanager
def seaweedfs_server(config_dir: Path, port_base: int, region: str, bucket: str) -> Iterator[tuple[str, dict]]:
    """(its URL, its admin keys); killed after (SeaweedFS ignores SIGTERM)."""
    port = free_block(port_base)
    keys = {"s3_access_key": secrets.token_hex(8), "s3_secret_key": secrets.token_hex(16),
            "s3_sts_signing_key": secrets.token_urlsafe(32)}
    seaweedfs.write_config(config_dir, load_catalog(DEFAULT_CATALOG), keys)
    (config_dir / "data").mkdir()
    with open(config_dir / "weed.log", "wb") as log:
        proc = subprocess.Popen(seaweedfs.weed_command(Path(sys.executable).parent / "weed", config_dir, port),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            seaweedfs.ensure_bucket(url, region, bucket, keys, timeout=60)
            yield url, keys
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            seaweedfs.remove_sockets(port)
