"""The shape of the code: the core imports neither side, the sides do not import each other, the
runtime spawner does not import the build-time renderer, and each contract variable is named once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from mlplatform_core.contract import CONSTANTS, VARIABLES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"hub_config": ROOT / "hub_config", "mlplatform": ROOT / "extensions" / "mlplatform",
            "mlplatform_core": ROOT / "extensions" / "mlplatform_core"}


def modules(package: str) -> dict[str, Path]:
    base = PACKAGES[package]
    found = {}
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(base).with_suffix("").parts
        found[".".join((package, *parts[:-1]) if parts[-1] == "__init__" else (package, *parts))] = path
    return found


def imported(module: str, path: Path) -> set[str]:
    """Every module `module` imports, anywhere in it (lazy imports inside functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def offenders(package: str, forbidden) -> list[str]:
    return sorted(f"{module} imports {name}" for module, path in modules(package).items()
                  for name in imported(module, path) if forbidden(module, name))


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_notebook_package_does_not_import_the_hub():
    assert modules("mlplatform")  # the walk found the package
    assert offenders("mlplatform", lambda _, name: top(name) == "hub_config") == []


# The one exception: the renderer's Backstage skeletons are made by the notebook's own RayService and
# SparkApplication builders, so that a template gives the very object the notebook applies. The hub's image
# holds them already (the platform service acts through mlplatform.serving); they belong in the core package,
# and the exception goes when they move there.
BUILDERS = ("mlplatform.serving.kubernetes", "mlplatform.serving.spec", "mlplatform.spark.kubernetes",
            "mlplatform.spark.job")


def test_the_hub_does_not_import_the_notebook_package():
    def forbidden(module: str, name: str) -> bool:
        builder = any(name == b or name.startswith(f"{b}.") for b in BUILDERS)
        return top(name) == "mlplatform" and not (module == "hub_config.render.backstage" and builder)

    assert offenders("hub_config", forbidden) == []


def test_the_core_imports_neither_side():
    assert offenders("mlplatform_core", lambda _, name: top(name) in ("hub_config", "mlplatform")) == []


def test_the_runtime_spawners_do_not_import_the_renderer():
    assert offenders("hub_config", lambda module, name: module.startswith("hub_config.spawners")
                     and name.startswith("hub_config.render")) == []


def test_the_import_walk_sees_relative_and_lazy_imports(tmp_path):
    """The checks above can fail: a relative import and an import inside a function are both seen."""
    path = tmp_path / "probe.py"
    path.write_text("from ..render.common import X\n\ndef f():\n    import mlplatform.serving\n")
    assert imported("hub_config.spawners.probe", path) >= {"hub_config.render.common", "mlplatform.serving"}


def string_literals(path: Path) -> list[str]:
    """String constants of a module, docstrings left out (they may explain a variable)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


CONTRACT_VARIABLES = sorted({name for names in VARIABLES.values() for name in names} | set(CONSTANTS))


@pytest.mark.parametrize("variable", CONTRACT_VARIABLES)
def test_each_contract_variable_is_named_once(variable):
    """Only the contract spells a variable as a key; everyone else reads or writes it through
    PlatformEnvironment or `contract.variable(field)` (messages may still mention it)."""
    contract = PACKAGES["mlplatform_core"] / "contract.py"
    spelled = [f"{path.relative_to(ROOT)}" for package in PACKAGES for path in modules(package).values()
               if path != contract and variable in string_literals(path)]
    assert spelled == []
    assert sum(names.count(variable) for names in VARIABLES.values()) + (variable in CONSTANTS) == 1


def test_the_notebook_server_starts_without_mlflow_ray_or_pyspark():
    """The server extension's import (every spawn waits for it) leaves the heavy libraries to the first
    request that needs them: MLflow alone takes seconds to import."""
    heavy = ("mlflow", "ray", "pyspark", "sklearn", "boto3")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, mlplatform.extension, mlplatform.handlers; "
                               f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_the_platform_service_starts_without_mlflow_or_the_kubernetes_client():
    """The service imports MLflow at its first promotion, rollout or artifact read, and the Kubernetes client only
    on Kubernetes (issue 13: the idle local platform's memory; the two were ~190 of its ~295 MB)."""
    heavy = ("mlflow", "kubernetes", "kubernetes_asyncio", "pandas")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, mlplatform_service.app; "
                               f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []
