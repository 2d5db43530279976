"""`mlplatform-spark-local stop-all|stop-server ...`: stop local Spark jobs from a shell.

    stop-all [--homes DIR] [--state-dir DIR ...]            every job (the local platform's stop)
    stop-server --home DIR --user NAME --server NAME        the jobs one server submitted (the hub, when
                                                            that server stops; --server "" is the default one)

Local jobs run in sessions of their own and outlive the server that submitted them. The local
platform stops every job of its users with the rest of the platform, and the hub stops a server's
jobs when the server stops, through this command (run as `python -m mlplatform.spark.local_cli`, so
the hub side never imports the notebook package): a job left running would keep the GPUs the hub has
handed back.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .local import LocalSparkBackend, state_dir_of

REASONS = {"stop-all": "stopped with the local platform", "stop-server": "stopped with its notebook server"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlplatform-spark-local", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=tuple(REASONS))
    parser.add_argument("--homes", type=Path, action="append", default=[],
                        help="stop the jobs of every home in this folder (<DIR>/<user>/.mlplatform/spark), "
                             "e.g. the local platform's <data dir>/home")
    parser.add_argument("--home", type=Path, action="append", default=[],
                        help="stop the jobs kept in this user's home (<DIR>/.mlplatform/spark)")
    parser.add_argument("--state-dir", type=Path, action="append", default=[],
                        help="stop the jobs of this state folder of the local Spark backend "
                             "(default, without --homes or --home: ~/.mlplatform/spark)")
    parser.add_argument("--user", help="stop-server: the hub user whose server stopped")
    parser.add_argument("--server", help="stop-server: the server's name (\"\" for the default server)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds between SIGTERM and SIGKILL (default 10)")
    args = parser.parse_args(argv)
    if args.action == "stop-server" and (not args.user or args.server is None):
        parser.error("stop-server needs --user and --server (the default server: --server=)")
    folders = [*args.state_dir, *(state_dir_of(home) for home in args.home),
               *(state_dir_of(home) for homes in args.homes if homes.is_dir()
                 for home in sorted(homes.iterdir()) if home.is_dir())]
    if not args.homes and not args.home and not args.state_dir:
        folders = [state_dir_of(Path.home())]
    backends = [LocalSparkBackend(folder, cancel_grace=args.grace) for folder in folders if folder.is_dir()]
    only = {"user": args.user, "server": args.server} if args.action == "stop-server" else {}
    with ThreadPoolExecutor(max_workers=8) as pool:  # users' grace periods run side by side
        stopped = [app_id for ids in pool.map(lambda b: b.cancel_all(REASONS[args.action], **only), backends)
                   for app_id in ids]
    print(f"stopped {len(stopped)} local Spark job(s){': ' if stopped else ''}{', '.join(stopped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
