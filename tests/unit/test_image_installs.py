"""The images without Docker: each distinct extra of images/*/Dockerfile installed as the image installs
it (`-c constraints.txt "<src>[<extra>]"`, not editable, from a copy of the build context that
.dockerignore leaves) into a fresh venv, then what the image's entry point needs run inside that venv.

test_installs.py imports each role with everything outside its extra refused, in the test venv; this
one installs the extra alone, so it also sees what only a real install shows: console scripts on PATH,
data files (the server extension's config), CLIs of other distributions (aws, ray, mlflow) and
dependencies that the metadata walk cannot see (pycurl's libcurl, compiled extensions).

The venvs are made with uv from its cache (`scripts/install` fills it with every distribution of the
lock), which links the files instead of unpacking wheels: seconds per venv. PyTorch of notebook-gpu
is not in the lock and is left out; notebook-gpu and ray-gpu install the notebook's and ray's extras.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mlplatform.serving.spec import IMPORT_PATH

from ..support.image_venv import ImageVenvError, build_context, clean_environ, install_extra

from .test_installs import IMAGES

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Each distinct extra once, with the images that install it.
EXTRAS: dict[str, list[str]] = {}
for _image, (_extra, _others) in IMAGES.items():
    EXTRAS.setdefault(_extra, []).append(_image)

# In one process of the venv (each module compiled once): imports (`module:attribute` for a callable)
# and snippets of Python, each failure named (an ImportError's message names the missing module).
PYTHON = r"""
import importlib, json, sys
failures = {}
for name in json.loads(sys.argv[1]):
    module, _, attribute = name.partition(":")
    try:
        loaded = importlib.import_module(module)
        if attribute and not callable(getattr(loaded, attribute)):
            failures[name] = "not callable"
    except BaseException as error:
        failures[f"import {name}"] = f"{type(error).__name__}: {error}"
for what, code in json.loads(sys.argv[2]).items():
    try:
        exec(code, {})
    except BaseException as error:
        failures[what] = f"{type(error).__name__}: {error}"
print(json.dumps(failures, indent=1))
sys.exit(1 if failures else 0)
"""
# What the z2jh chart's jupyterhub_config.py (files/hub/ of the chart) does with the hub image's Python
# before loading ours: tornado's curl client (pycurl), the Kubernetes asyncio client, z2jh.py's yaml.
Z2JH = """
from tornado.httpclient import AsyncHTTPClient
from kubernetes_asyncio import client
import yaml
AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient")
AsyncHTTPClient()
"""
# MLFLOW_TRACKING_AUTH=mlplatform in notebooks, replicas and Spark jobs: MLflow loads this entry point.
MLFLOW_AUTH = {"MLflow's request auth provider `mlplatform`": """
from importlib.metadata import entry_points
(ep,) = [ep for ep in entry_points(group="mlflow.request_auth_provider") if ep.name == "mlplatform"]
ep.load()
"""}
# The credential process runs and refuses for want of the server's environment (not an ImportError).
AWS_CREDENTIALS = ("mlplatform-aws-credentials", ["mlplatform-aws-credentials"], 1,
                   "MLPLATFORM_CREDENTIALS_URL or JUPYTERHUB_API_TOKEN is not set")

# Per extra: what imports, Python snippets run (in one process), and commands run in the venv with its
# bin/ first on PATH: (what, argv, exit status, text the output must contain).
CHECKS: dict[str, dict] = {
    # The chart's hub pod: `jupyterhub --config /usr/local/etc/jupyterhub/jupyterhub_config.py`, which
    # loads hub_config.hub; the chart's cull service runs `python3 -m jupyterhub_idle_culler`.
    "hub": {
        "imports": ["jupyterhub.app", "kubespawner", "oauthenticator", "hub_config.hub",
                    "hub_config.spawners.kubernetes", "hub_config.keycloak", "hub_config.render",
                    "hub_config.s3_broker", "pycurl", "jupyterhub_idle_culler", "mlplatform_service.gateway_pod"],
        "python": {"the z2jh chart's jupyterhub_config.py (curl HTTP client, kubernetes_asyncio, yaml)": Z2JH},
        "commands": [
            ("jupyterhub --version", ["jupyterhub", "--version"], 0, "6.1.1"),
            ("the chart's idle culler service", ["python3", "-m", "jupyterhub_idle_culler", "--help"], 0, "--timeout"),
            # The teams' rollout gateways run this image (hub_config/render/gateway.py): HAProxy 2.8 with Lua.
            ("mlplatform-gateway --help", ["mlplatform-gateway", "--help"], 0, "--team"),
            ("the gateway's HAProxy", ["python3", "-c", "import subprocess; from mlplatform.serving.gateway import "
                                       "_haproxy_binary; subprocess.run([_haproxy_binary(), '-vv'], check=True)"],
             0, "Built with Lua version"),
        ],
    },
    # KubeSpawner runs `jupyterhub-singleuser`: JupyterLab with the mlplatform server extension.
    "notebook": {
        "imports": ["jupyterlab", "jupyterhub.singleuser", "mlplatform.extension", "mlplatform.handlers",
                    "mlplatform.widgets", "mlplatform.serving.local", "mlplatform.spark.local", "ipywidgets", "s3fs",
                    "pyspark.sql", IMPORT_PATH],
        "python": {**MLFLOW_AUTH, "JupyterLab's settings overrides of the package (no news prompt)": """
import json, sys
from pathlib import Path
path = Path(sys.prefix, "share/jupyter/lab/settings/overrides.d/mlplatform.json")
assert json.loads(path.read_text())["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
""", "JupyterLab's page config of the package (no build check at each page load)": """
from jupyterlab_server.config import get_static_page_config
assert get_static_page_config(level="all")["buildCheck"] is False
"""},
        "commands": [
            ("jupyterhub-singleuser --help", ["jupyterhub-singleuser", "--help"], 0, "--help-all"),
            AWS_CREDENTIALS,
            ("aws --version", ["aws", "--version"], 0, "aws-cli/"),
            # Validates each enabled extension by importing it; the section of the venv's config is checked.
            ("jupyter server extension list", ["jupyter", "server", "extension", "list"], 0, "mlplatform enabled"),
        ],
    },
    # RayService replicas import the Serve app of serving/spec.py's IMPORT_PATH; Ray's CLI runs the head.
    "serving": {
        "imports": [IMPORT_PATH, "mlflow.pyfunc", "sklearn", "boto3", "psutil", "ray.serve"],
        "python": MLFLOW_AUTH,
        "commands": [
            ("ray --version", ["ray", "--version"], 0, "2.60.0"),
            ("serve --help", ["serve", "--help"], 0, "deploy"),
            AWS_CREDENTIALS,
        ],
    },
    # SparkApplication drivers run the user's mainApplicationFile with PySpark, the environment contract,
    # MLflow (with the hub's tokens) and boto3.
    "spark": {
        "imports": ["pyspark.sql", "mlplatform.environment", "mlplatform_core.contract", "mlflow", "boto3"],
        "python": {**MLFLOW_AUTH, "pyspark 4.3.0": "import pyspark; assert pyspark.__version__ == '4.3.0'"},
        "commands": [AWS_CREDENTIALS],
    },
    # `mlflow server --app-name basic-auth` with the hub's tokens checked by hub_config.mlflow_access.server.
    "mlflow-server": {
        "imports": ["hub_config.mlflow_access.server", "mlflow.server.auth", "jwt"],
        "python": {},
        "commands": [("mlflow server --help", ["mlflow", "server", "--help"], 0, "--app-name")],
    },
}


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def check_extra(extra: str, base: Path) -> list[str]:
    """Installs the extra alone into a fresh venv and runs its checks there: what failed."""
    # One path for every venv in turn, so the bytecode compiled under PYTHONPYCACHEPREFIX for one venv's
    # files is valid for the next's: the same files, linked from uv's cache (same mtime and size).
    src, venv, home = base / "src", base / "venv", base / f"home-{extra}"
    home.mkdir()
    env = clean_environ()  # nothing of this process's venv, Jupyter paths or Python settings
    try:
        try:
            install_extra(extra, src, venv)
        except ImageVenvError as e:
            return [str(e)]

        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), HOME=str(home),
                   JUPYTER_PLATFORM_DIRS="1", PYTHONPYCACHEPREFIX=str(base / "pycache"))
        checks = CHECKS[extra]
        python = ("imports and Python", ["python", "-c", PYTHON, json.dumps(checks["imports"]),
                                         json.dumps(checks["python"])], 0, "")
        failed = []
        for what, argv, status, expected in [python, *checks["commands"]]:
            # cwd: not the checkout, whose packages would shadow the installed ones.
            result = run(argv, env=env, cwd=home, timeout=300)
            output = ANSI.sub("", result.stdout + result.stderr)
            if argv[:3] == ["jupyter", "server", "extension"]:  # the section of the venv's own config
                output = output.partition(f"Config dir: {venv / 'etc' / 'jupyter'}")[2].partition("Config dir:")[0]
                if not re.search(r"^\s*mlplatform \S* ?OK$", output, re.MULTILINE):
                    status = "validated OK"  # fails below
            if result.returncode != status or expected not in output:
                failed.append(f"{what}: exit status {result.returncode} (expected {status}"
                              f"{f', output with {expected!r}' if expected else ''}):\n{output[-2000:]}")
        return failed
    finally:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def image_checks(tmp_path_factory) -> dict[str, list[str]]:
    """Every extra checked in turn. Most of the time goes to compiling what the checks import; the notebook's
    extra, first, holds the serving's and the spark's, whose checks then find their bytecode compiled."""
    base = tmp_path_factory.mktemp("image-installs")
    build_context(base / "src")
    try:
        order = sorted(EXTRAS, key=lambda extra: extra != "notebook")
        yield {extra: check_extra(extra, base) for extra in order}
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_images_extra_installs_alone_and_runs_what_the_image_runs(extra, image_checks):
    images = ", ".join(f"images/{image}" for image in EXTRAS[extra])
    assert not image_checks[extra], (f"{images} (extra {extra}), in a venv of the extra alone:\n"
                                     + "\n".join(image_checks[extra]))


def test_every_images_extra_is_checked():
    assert set(CHECKS) == set(EXTRAS)
