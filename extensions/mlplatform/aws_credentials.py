"""`mlplatform-aws-credentials`: the AWS `credential_process` of notebook servers.

Asks the hub for this server's short-lived S3 credentials with the server's own token and prints the
credential process JSON (with `Expiration`, so boto3, the AWS CLI and s3fs renew on their own). On
failure it prints one clear line on stderr and exits non-zero; the SDK shows that line to the user.
"""

from __future__ import annotations

import json
import os
import sys
import time

import requests

from .environment import read_environment

RETRIES = 3  # a hub restarting answers again within seconds
# How long one ask waits for the hub: longer than the hub's broker takes to give up on a hung STS
# (hub_config.s3_broker: two tries of `sts_timeout_seconds`), so the user reads the hub's reason.
HUB_TIMEOUT_SECONDS = 30


def fetch(environ=os.environ, retries: int = RETRIES, backoff: float = 1.0) -> dict:
    """The credential process JSON from the hub; raises RuntimeError with a message for the user."""
    url = read_environment(environ).credentials_url
    token = environ.get("JUPYTERHUB_API_TOKEN")
    if not url or not token:
        raise RuntimeError("MLPLATFORM_CREDENTIALS_URL or JUPYTERHUB_API_TOKEN is not set: S3 credentials come "
                           "from the hub, inside a notebook server started by the mlplatform hub")
    for attempt in range(retries):
        try:
            r = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=HUB_TIMEOUT_SECONDS)
        except requests.RequestException as e:
            problem = f"cannot reach the hub at {url}: {type(e).__name__}"
        else:
            if r.status_code == 200:
                return r.json()
            try:
                message = r.json().get("message") or r.reason
            except ValueError:
                message = r.reason
            problem = f"the hub refused S3 credentials ({r.status_code}): {message}"
            if r.status_code < 500:
                break  # the answer will not change by asking again
        if attempt + 1 < retries:
            time.sleep(backoff * 2**attempt)
    raise RuntimeError(problem)


def main() -> int:
    try:
        print(json.dumps(fetch()))
    except RuntimeError as e:
        print(f"mlplatform-aws-credentials: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
