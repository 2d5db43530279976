"""helm-values/ and prepull/ in the repository are exactly what `mlplatform render` makes of
helm-values/platform.yaml, so the examples never drift from the renderer."""

from pathlib import Path

from mlplatform_core.catalog import load_catalog
from hub_config.render.build import render

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "helm-values" / "platform.yaml"
CHARTS = {chart: ROOT.parent / "shared" / "charts" / chart for chart in ("jupyterhub", "kuberay-operator", "spark-operator")}
REFRESH = "mlplatform render --catalog helm-values/platform.yaml --out . --only helm-values,prepull"


def test_repository_examples_are_the_rendered_files():
    rendered = {path: text for path, text in render(load_catalog(CATALOG, environ={}), charts=CHARTS).items()
                if path.split("/")[0] in ("helm-values", "prepull")}
    in_repo = {p.relative_to(ROOT).as_posix(): p.read_bytes()
               for folder in ("helm-values", "prepull") for p in sorted((ROOT / folder).glob("*.yaml"))
               if p != CATALOG}
    assert sorted(in_repo) == sorted(rendered), f"files differ; run: {REFRESH}"
    for path, text in rendered.items():
        assert in_repo[path] == text.encode(), f"{path} is not what render makes of the catalog; run: {REFRESH}"
