"""MLflow access control: MLflow's own auth app, one workspace per team, tokens signed by the hub.

    tokens.py        the hub's signing key, the tokens it mints, the MLflow roles a user gets
    provisioning.py  each team's workspace, roles and default experiment, made by the platform identity
    handlers.py      the hub's token endpoint (servers) and MLflow UI login page (browsers)
    server.py        the authorization function MLflow's auth app calls (runs in MLflow's process)

Why MLflow's auth app and not `mlflow-oidc-auth`: it ships with MLflow (same pin, same release
cycle), has workspace roles that map onto teams, and takes a custom authorization function, so
MLflow's own permission checks do the enforcing while the hub stays the source of identity and
membership. `mlflow-oidc-auth` 10.x/11.x does not import on Python 3.11.7 and needs gunicorn < 24.
"""
