"""`mlplatform-ray-head start|stop|status [--port N]`: the local Ray head of model serving, from a shell.

Notebooks start the head on their first deploy; the local platform starts it in the background at its
start, and stops it with the rest of the platform, through this command, so the hub side never imports the
notebook package. `start` also starts Serve (its controller and proxy) with every recorded application and
the warm spare (local.py), and returns once the spare's replica runs (at most SPARE_WAIT seconds): a head that
`start` reported running takes a first deploy in seconds, not the ~10 CPU-seconds of a fresh replica.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import requests

from .errors import BackendUnavailable
from .local import LocalRayConfig, LocalRayHead, LocalServing

SPARE_WAIT = 180  # seconds; ~12 CPU-seconds of imports and Serve's build, longer on a busy machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlplatform-ray-head", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--port", type=int, help="the head's first port (default: $MLPLATFORM_RAY_PORT or 18600)")
    args = parser.parse_args(argv)
    config = LocalRayConfig.from_environ()
    if args.port is not None:
        config = dataclasses.replace(config, port=args.port)
    head = LocalRayHead(config)
    try:
        if args.action == "stop":
            head.stop()
        elif args.action == "start" and head.ensure():
            serving = LocalServing(config)
            serving.start_serve()  # Serve up before the first deploy, which then only adds its app
            if serving.warm_spare and not serving.wait_for_spare(SPARE_WAIT):
                print("mlplatform-ray-head: the warm spare is not running; a first deploy starts its own replica "
                      f"(see {head.root}/head.log and Ray's logs)", file=sys.stderr)
    except (BackendUnavailable, requests.RequestException) as e:  # e.g. a directory another user owns: say so
        print(f"mlplatform-ray-head: {e}", file=sys.stderr)
        return 1
    running = head.running()
    print(f"Ray head on port {config.port}: {'running' if running else 'stopped'}")
    return 0 if running or args.action == "stop" else 3


if __name__ == "__main__":
    sys.exit(main())
