"""The GitOps writer's checks before any git runs: the credential from the service's environment, URLs and paths
(the writer against a real Git server: tests/integration/test_gitops_repository.py)."""

from __future__ import annotations

import pytest
from mlplatform_service.gitops import CREDENTIALS_VARIABLE, Credentials, GitOpsRepository, Identity, to_yaml

PLATFORM = Identity("mlplatform", "mlplatform@example.org")


def test_the_credential_leaves_the_environment_it_is_read_from():
    environ = {CREDENTIALS_VARIABLE: "mlplatform:s3cr:et", "OTHER": "x"}
    credentials = Credentials.from_environ(environ)
    assert credentials == Credentials("mlplatform", "s3cr:et") and environ == {"OTHER": "x"}
    assert "s3cr" not in repr(credentials)
    assert Credentials.from_environ({}) is None
    with pytest.raises(ValueError, match=r"^\$MLPLATFORM_GITOPS_CREDENTIALS must be <user>:<token> \(the value is not "
                                         r"shown\)$") as e:
        Credentials.from_environ({CREDENTIALS_VARIABLE: "only-a-token"})
    assert "only-a-token" not in str(e.value)


def test_a_url_with_a_password_is_refused_without_showing_it(tmp_path):
    with pytest.raises(ValueError) as e:
        GitOpsRepository("https://bot:tok3n@git.example.org/org/deploy.git", "main", None, PLATFORM, tmp_path)
    assert str(e.value) == ("the GitOps repository URL https://git.example.org/org/deploy.git holds a user or "
                            "password: give the credentials separately (a URL shows in logs)")


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.yaml", "teams/../../x.yaml", ".git/config", "."])
def test_paths_outside_the_working_tree_are_refused(tmp_path, path):
    repo = GitOpsRepository("https://git.example.org/org/deploy.git", "main", None, PLATFORM, tmp_path)
    with pytest.raises(ValueError, match="is not a file path inside the repository, e.g. 'teams/vision/serving/iris.yaml'"):
        repo.read(path)
    assert list(tmp_path.iterdir()) == []  # refused before anything was cloned


def test_the_file_keeps_the_objects_key_order():
    assert to_yaml({"kind": "RayService", "apiVersion": "ray.io/v1", "metadata": {"name": "iris"}}) == (
        "kind: RayService\napiVersion: ray.io/v1\nmetadata:\n  name: iris\n")
