"""Backstage entities against the upstream schemas in ../shared/schemas/backstage, and templates rendered as
Backstage's scaffolder renders them (npm's nunjucks, tests/support/backstage_render.js)."""

from __future__ import annotations

import json
import subprocess
from functools import lru_cache
from pathlib import Path

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from .crd import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
RENDER_SCRIPT = Path(__file__).with_name("backstage_render.js")


@lru_cache(maxsize=None)
def _registry() -> Registry:
    """The four schemas refer to each other by $id (Entity, EntityMeta, common, TemplateV1beta3)."""
    resources = []
    for path in sorted((SCHEMAS / "backstage").glob("*.schema.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema, default_specification=DRAFT7)))
    return Registry().with_resources(resources)


def errors(entity: dict, schema_id: str = "Entity") -> list[str]:
    """Problems of `entity` under the schema `schema_id` ('TemplateV1beta3' for a Software Template)."""
    validator = jsonschema.Draft7Validator(_registry().contents(schema_id), registry=_registry())
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(entity)]


def render_template(template: dict, skeleton: dict[str, str], parameters: dict, user: str) -> dict:
    """{'inputs': each step's input rendered, 'files': the skeleton rendered with the fetch step's values}."""
    done = subprocess.run(["node", str(RENDER_SCRIPT)], input=json.dumps(
        {"template": template, "skeleton": skeleton, "parameters": parameters, "user": user}),
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
