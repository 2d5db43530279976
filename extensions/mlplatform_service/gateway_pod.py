"""One team's rollout gateway on a cluster: `mlplatform-gateway --team <team>`, the container of the Deployment
`mlplatform-gateway-<team>` that `mlplatform render` makes in the hub's namespace (hub_config/render/gateway.py).

It runs what the local platform runs for every team (issue 12's evidence wall), outside the team's namespace and
with an identity of the platform's:

- HAProxy with the same configuration as the local head's gateway (serving/gateway.py, gateway.lua), listening on
  GATEWAY_PORT, where callers reach the team's endpoints (serving/kubernetes.py `url`): each endpoint's Serve is
  KubeRay's Service `<name>-serve-svc` in the team's namespace, found by DNS per request (the pod's resolv.conf),
  so an endpoint deployed later needs no change here.
- the evidence shipper (evidence.py) on the gateway's log socket, writing the team's lines (no other team's) under
  the platform's evidence prefix with the pod's S3 identity: its service account's (render's `mlplatform-gateway`,
  e.g. an IRSA role that may write `<bucket>/platform/evidence/*`), which no team's pod has.
- the team's traffic map, followed with the same account's token (traffic_watch.py): the ConfigMap
  `mlplatform-gateway-<team>-traffic` in the hub's namespace that the platform service writes; each change is applied
  to HAProxy at once. Until the API server answers, HAProxy keeps the map it has (none at a pod's first start: every
  endpoint passes through to its champion).

It exits when HAProxy does (the kubelet starts the container again), and on SIGTERM stops following the map, stops
HAProxy and writes what the shipper holds.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from mlplatform import kube
from mlplatform.serving.gateway import ENDPOINT, Gateway, GatewayError, GatewaySpec
from mlplatform_core.catalog import Catalog, CatalogError, cached_catalog
from mlplatform_core.contract import variable
from mlplatform_core.names import GATEWAY_PORT, GATEWAY_RUN_DIRECTORY, SERVE_PORT, service_host

from .evidence import EvidenceShipper, platform_s3, team_logs
from .traffic_watch import TrafficWatch

log = logging.getLogger("mlplatform_service.gateway_pod")
CHECK_SECONDS = 2.0


def gateway_spec(catalog: Catalog, team: str, *, listen: tuple[str, int] = ("0.0.0.0", GATEWAY_PORT),
                 log_socket: Path | None = None, nameservers: tuple[tuple[str, int], ...] = (),
                 serve_port: int = SERVE_PORT) -> GatewaySpec:
    """The team's gateway: every endpoint of the team's namespace at KubeRay's serve Service."""
    upstream = service_host(f"{ENDPOINT}-serve-svc", catalog.teams[team].namespace, catalog.kubernetes.cluster_domain)
    return GatewaySpec(listen=listen, upstream=(upstream, serve_port),
                       log_socket=log_socket, nameservers=nameservers)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlplatform-gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--team", required=True,
                        help="the team whose endpoints it fronts (a key of the catalog's teams)")
    parser.add_argument("--listen", type=_address, default=("0.0.0.0", GATEWAY_PORT), help="HOST:PORT")
    parser.add_argument("--directory", type=Path, default=Path(GATEWAY_RUN_DIRECTORY), help="its sockets and configuration")
    parser.add_argument("--nameserver", type=_address, action="append", default=[],
                        help="HOST:PORT of a DNS server (default: the resolv.conf of the pod)")
    parser.add_argument("--serve-port", type=int, default=SERVE_PORT, help="the port of KubeRay's serve Services")
    parser.add_argument("--hub-namespace", help="where the team's traffic map is (default: the catalog's "
                                                "kubernetes.hub_namespace)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    catalog_variable = variable("catalog_path")
    if not os.environ.get(catalog_variable):
        parser.error(f"{catalog_variable} is not set: the path of the platform catalog")
    catalog = functools.partial(cached_catalog, os.environ[catalog_variable])
    try:
        teams = catalog().teams
    except CatalogError as e:
        parser.error(str(e))
    if args.team not in teams:
        parser.error(f"--team: {args.team!r} is not a team of the catalog; allowed: {', '.join(sorted(teams))}")
    directory = args.directory
    shipper = EvidenceShipper(directory / "evidence.sock",
                              team_logs(catalog, functools.cache(lambda: platform_s3(catalog().storage.s3))),
                              teams={args.team})
    spec = gateway_spec(catalog(), args.team, listen=args.listen, log_socket=shipper.socket_path,
                        nameservers=tuple(args.nameserver), serve_port=args.serve_port)
    gateway = Gateway(directory / "haproxy", spec, log_file=False)  # its alerts in the container's log
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    shipper.start()
    try:
        gateway.start(timeout=30)  # the readiness probe waits; a busy node may take seconds
    except GatewayError as e:
        log.error("%s", e)
        shipper.close(timeout=10)
        return 1
    log.info("team %s's gateway listens on %s:%s; its evidence is shipped from %s", args.team, *args.listen,
             shipper.socket_path)
    traffic = TrafficWatch(gateway, args.team, args.hub_namespace or catalog().kubernetes.hub_namespace,
                           connect=kube.connect)  # the pod's service account, else $KUBECONFIG
    traffic.start()
    code = 0
    while not stop.wait(CHECK_SECONDS):
        if gateway.process.poll() is not None:
            log.error("HAProxy exited (status %s)", gateway.process.returncode)
            code = 1
            break
    traffic.stop()
    gateway.stop(timeout=20, soft=True)
    written = shipper.close(timeout=20, drain=5)  # the lines HAProxy sent before it exited, to the last
    log.info("stopped (%s)", "the evidence written" if written else "some evidence could not be written")
    return code


if __name__ == "__main__":
    sys.exit(main())
