"""What an OpenAPI document promises: the REST API and the platform service list no 5xx but 503."""

from __future__ import annotations

from pathlib import Path

import yaml


def promised_server_errors(document: Path) -> set[tuple[str, str, str]]:
    """(path, method, status) of every 5xx the document lists, but 503 (a component not answering)."""
    paths = yaml.safe_load(document.read_text())["paths"]
    return {(path, method, status) for path, operations in paths.items()
            for method, operation in operations.items() if isinstance(operation, dict)
            for status in operation.get("responses", {}) if str(status).startswith("5") and str(status) != "503"}
