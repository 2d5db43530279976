"""Fixtures of the unit tests: spawners made here write budgets, usage and audit records to a fresh database."""

from ..support.governance import governance_database  # noqa: F401 (autouse)
