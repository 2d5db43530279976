"""State files written atomically: what both sides keep on disk (the launcher's secrets, the local
backends' records)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `path` atomically (a reader sees the old or the new file, never half of one). Each writer
    has a temp file of its own (a shared temp name lets concurrent writers truncate and move each
    other's half-written files)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, doc: dict[str, Any], mode: int = 0o600) -> None:
    write_text(path, json.dumps(doc, indent=1), mode)


def read_json(path: Path) -> dict[str, Any] | None:
    """The document, or None when the file is missing (or being replaced by a writer that died)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
