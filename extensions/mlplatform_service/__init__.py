"""The platform service: the governance plane no notebook can bypass.

A JupyterHub-managed service (`/services/mlplatform/`) that holds the platform's privileged MLflow
identity. Notebook servers call it with their own hub token; it checks who calls (hub OAuth), which
teams they are in (the hub's groups) and what the catalog allows, then acts.

    database.py     one SQLAlchemy database: the audit log, the usage ledger, budget reservations
    audit_log.py    the append-only, hash-chained audit log; verify, filters, export, retention
    usage.py        the usage ledger: exact allocation intervals of GPUs, per team, user, profile, model
    budgets.py      team budgets per period, reserved atomically at every allocation point
"""
