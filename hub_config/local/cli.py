"""`mlplatform-local up`: run the local platform in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from mlplatform_core.catalog import CatalogError, load_catalog
from mlplatform_core.contract import variable

from ..catalog import DEFAULT_CATALOG
from .platform import LocalPlatform, PlatformError, Ports


def _port(name: str, default: int | None) -> int | None:
    value = os.environ.get(f"MLPLATFORM_{name.upper()}_PORT")
    return int(value) if value else default


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlplatform-local", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local platform and wait for Ctrl-C")
    up.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MLPLATFORM_DATA_DIR", ".mlplatform")),
                    help="where state, logs and user homes live (default: .mlplatform, or $MLPLATFORM_DATA_DIR)")
    up.add_argument("--catalog", type=Path, default=os.environ.get(variable("catalog_path")),
                    help="platform catalog (default: the bundled local catalog, or $MLPLATFORM_CATALOG)")
    up.add_argument("--hub-port", type=int, default=_port("hub", 18000),
                    help="public hub port; the proxy API uses port+1 and the hub API port+81 (default 18000)")
    up.add_argument("--sso-port", type=int, default=_port("sso", 18080), help="dev OIDC provider (default 18080)")
    up.add_argument("--mlflow-port", type=int, default=_port("mlflow", 18500), help="MLflow server (default 18500)")
    up.add_argument("--s3-port", type=int, default=_port("s3", None),
                    help="S3 server with STS (SeaweedFS); its internal ports are port+1 .. port+7 "
                         "(default: hub port + 300, i.e. 18300)")
    up.add_argument("--no-ray-head", dest="ray_head", action="store_false",
                    help="do not start the Ray head of model serving now (the first deploy starts it)")
    return p


def banner(platform: LocalPlatform, ray_head: bool = False) -> str:
    users = platform.demo_users()
    width = max(len(u["username"]) for u in users)
    lines = [
        "",
        "mlplatform local platform is ready",
        f"  JupyterHub   {platform.hub_url}",
        f"  Keycloak-like SSO realm   {platform.realm_url}",
        f"  MLflow       {platform.mlflow_url}",
        f"  S3 + STS     {platform.s3_url}",
        f"  GitOps repo  {platform.gitops_url} (the platform service commits users' deployments)",
        f"  logs         {platform.logs}",
        *([f"  Ray Serve    starting in the background on port {platform.ports.ray} (model serving)"]
          if ray_head else []),
        "",
        "Demo logins (username / password — groups):",
    ]
    for u in users:
        groups = ", ".join(g.lstrip("/") for g in u["groups"])
        note = " (admin)" if "platform-admin" in u["realmRoles"] else ""
        refused = " (in no team: refused)" if not any(g.startswith("/team-") for g in u["groups"]) else ""
        lines.append(f"  {u['username']:<{width}} / {u['password']:<{width + 3}} — {groups}{note}{refused}")
    lines += ["", "Press Ctrl-C to stop every process."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    ports = Ports(hub=args.hub_port, sso=args.sso_port, mlflow=args.mlflow_port, s3=args.s3_port)
    # The catalog refers to these ports as ${MLPLATFORM_*_PORT}; validate it before starting anything.
    os.environ.update(MLPLATFORM_HUB_PORT=str(ports.hub), MLPLATFORM_SSO_PORT=str(ports.sso),
                      MLPLATFORM_MLFLOW_PORT=str(ports.mlflow), MLPLATFORM_S3_PORT=str(ports.s3))
    try:
        load_catalog(args.catalog or DEFAULT_CATALOG)
    except CatalogError as e:
        print(e, file=sys.stderr)
        return 2
    platform = LocalPlatform(data_dir=args.data_dir, ports=ports, catalog=args.catalog)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    # Ctrl-C stops the platform even when its parent ignored SIGINT (a background job of a script: Python
    # then keeps SIGINT ignored and would not raise KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        print(f"Starting the local platform in {args.data_dir.resolve()} ...", flush=True)
        platform.start()
        # Ahead of the first deploy, not in a user's request: the head takes ~15 s to start.
        ray_head = args.ray_head and platform.start_ray_head()
        print(banner(platform, ray_head), flush=True)
        while True:
            for name, proc in platform.processes.items():
                if proc.poll() is not None:
                    raise PlatformError(f"{name} exited with code {proc.returncode}; its log: "
                                        f"{platform.logs / (name + '.log')}\n{platform.log_tail(name)}")
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    except PlatformError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        platform.stop()
        print("Stopped every process of the local platform.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
