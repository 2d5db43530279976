"""`mlplatform render --catalog platform.yaml --out build/`: a cluster's manifests and Helm values.

`mlplatform audit verify|export`: the platform service's audit log (mlplatform_service.audit_cli).
"""

from __future__ import annotations

import argparse
import os
import sys

from mlplatform_core.catalog import CatalogError, load_catalog
from mlplatform_service import audit_cli

from .build import OUTPUTS, render
from .charts import RELEASES
from .checks import RenderError
from .common import render_environ
from .writer import write


def _only(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in OUTPUTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: a comma-separated choice of {', '.join(OUTPUTS)}")
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlplatform", description="Tools of the ML platform.")
    commands = p.add_subparsers(dest="command", required=True)
    r = commands.add_parser(
        "render", help="render Helm values, team namespaces and pre-pull DaemonSets from the catalog",
        description="Writes OUT/helm-values/ (jupyterhub, kuberay-operator, spark-operator), "
                    "OUT/cluster/hub-rbac.yaml, OUT/teams/<team>.yaml and OUT/prepull/<pool>.yaml; with the catalog's "
                    "gitops section also OUT/gitops/argocd-applications.yaml and OUT/backstage/templates/. Everything "
                    "is validated before anything is written.")
    r.add_argument("--catalog", required=True, help="the platform catalog (platform.yaml, backend: kubernetes)")
    r.add_argument("--out", required=True, help="folder to write into (created if missing)")
    r.add_argument("--only", type=_only, help=f"write only these folders: {','.join(OUTPUTS)}")
    for chart in RELEASES:
        r.add_argument(f"--{chart}-chart", metavar="DIR", dest=chart.replace("-", "_"),
                       help=f"an unpacked {chart} chart (helm pull --untar): render it with its values as helm "
                            "install would and validate every object it makes (needs the `render` extra)")
    audit_cli.add_parser(commands)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "audit":
        return audit_cli.run(args)
    charts = {chart: path for chart in RELEASES if (path := getattr(args, chart.replace("-", "_")))}
    try:
        # The hub pod's secrets the catalog refers to stay references (common.HUB_SECRET_VARIABLES).
        files = render(load_catalog(args.catalog, environ=render_environ(os.environ)), charts=charts)
    except (CatalogError, RenderError) as e:
        print(e, file=sys.stderr)
        return 1
    except OSError as e:  # an unreadable chart folder
        print(f"cannot read the chart: {e}", file=sys.stderr)
        return 1
    except ImportError:
        print("rendering a chart needs Helm's SDK: pip install -c constraints.txt '.[render]'", file=sys.stderr)
        return 1
    for path in write(files, args.out, args.only):
        print(f"wrote {path}")
    if unchecked := [chart for chart in RELEASES if chart not in charts]:
        print(f"note: not rendered with their charts: {', '.join(unchecked)}; give "
              f"{' '.join(f'--{chart}-chart DIR' for chart in unchecked)} to see chart errors before helm install",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
