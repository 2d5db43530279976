"""The one place that turns rendered documents into YAML text and files.

Writing happens only after everything was rendered and validated (build.render). Each file is
written next to its destination and renamed over it, so a reader never sees half a file; the
generated folders (GENERATED_FOLDERS) lose files that the catalog no longer produces (a removed
team or GPU type, `gitops` unset), while helm-values/ keeps files that are not rendered (the catalog lives there).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

GENERATED_FOLDERS = ("cluster", "prepull", "teams", "gitops", "backstage")
NESTED_FOLDERS = ("backstage",)  # templates with their skeleton trees: every file below is rendered


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # shared dicts are written out in full, never as &anchors
        return True


def _str(dumper, value: str):
    style = "|" if "\n" in value else None  # multi-line strings (config, the catalog) as literal blocks
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(documents: list[dict[str, Any]], header: str = "") -> str:
    return header + yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                                  default_flow_style=False, width=120, explicit_start=len(documents) > 1)


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write(files: dict[str, str], out: str | Path, only: tuple[str, ...] | None = None) -> list[Path]:
    """Write `files` (relative path → text) under `out`, restricted to the top folders in `only`.
    Returns the paths written, in order."""
    out = Path(out)
    chosen = {rel: text for rel, text in files.items() if only is None or rel.split("/")[0] in only}
    written = []
    for rel, text in chosen.items():
        _replace(out / rel, text)
        written.append(out / rel)
    for folder in GENERATED_FOLDERS:
        if only is None or folder in only:
            pattern = "**/*" if folder in NESTED_FOLDERS else "*.yaml"
            for stale in sorted((out / folder).glob(pattern)):
                if stale.is_file() and stale.relative_to(out).as_posix() not in chosen:
                    stale.unlink()
    return written
