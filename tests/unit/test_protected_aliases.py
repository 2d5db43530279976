"""What MLflow's authorization function refuses to anyone but the platform identity (hub_config/mlflow_access/
protected.py): moves of protected aliases and what would undo them, and the platform's own tags."""

import pytest

from hub_config.mlflow_access.protected import refusal

PROTECTED = ["champion", "production"]
ALIASES = {"iris": {"champion": "3", "staging": "4"}, "plain": {"staging": "1"}}
API = "/api/2.0/mlflow"


def refused(method, path, **params):
    return refusal(method, f"{API}{path}", params, PROTECTED, lambda name: ALIASES.get(name, {}))


@pytest.mark.parametrize("method, path, params, why", [
    ("POST", "/registered-models/alias", {"name": "iris", "alias": "champion", "version": "4"}, "protected alias"),
    ("DELETE", "/registered-models/alias", {"name": "iris", "alias": "production"}, "protected alias"),
    ("DELETE", "/model-versions/delete", {"name": "iris", "version": "3"}, "cannot be deleted"),
    ("DELETE", "/registered-models/delete", {"name": "iris"}, "cannot be deleted"),
    ("POST", "/registered-models/rename", {"name": "iris", "new_name": "iris-2"}, "cannot be renamed"),
    ("POST", "/model-versions/set-tag", {"name": "plain", "version": "1", "key": "mlplatform.audit.000001"},
     "the platform's own"),
    ("DELETE", "/registered-models/delete-tag", {"name": "plain", "key": "mlplatform.team"}, "the platform's own"),
    ("POST", "/model-versions/create", {"name": "plain", "source": "s3://x",
                                        "tags": [{"key": "mlplatform.audit.000002", "value": "{}"}]},
     "the platform's own"),
    ("POST", "/registered-models/create", {"name": "new", "tags": [{"key": "mlplatform.owner", "value": "x"}]},
     "the platform's own"),
])
def test_refused_to_users(method, path, params, why):
    assert why in refused(method, path, **params)


@pytest.mark.parametrize("method, path, params", [
    ("POST", "/registered-models/alias", {"name": "iris", "alias": "staging", "version": "4"}),
    ("DELETE", "/model-versions/delete", {"name": "iris", "version": "4"}),  # no protected alias on it
    ("DELETE", "/registered-models/delete", {"name": "plain"}),
    ("POST", "/registered-models/rename", {"name": "plain", "new_name": "plain-2"}),
    ("POST", "/model-versions/set-tag", {"name": "plain", "version": "1", "key": "intended_use"}),
    ("POST", "/model-versions/create", {"name": "plain", "source": "s3://x", "tags": [{"key": "owner"}]}),
    ("POST", "/model-versions/create", {"name": "plain", "source": "s3://x", "tags": "not a list"}),
    ("GET", "/registered-models/get", {"name": "iris"}),
])
def test_allowed_to_users(method, path, params):
    assert refused(method, path, **params) is None


def test_the_message_says_how_to_promote_instead():
    assert refused("POST", "/registered-models/alias", name="iris", alias="champion", version="4") == (
        "@champion is a protected alias: only the platform moves it; promote or roll back through the platform "
        "(the PromoteModel widget, the REST API or mlplatform.registry)")
