"""Fixtures of the Kubernetes tests: a fake API server per test, and a kubeconfig pointing at it."""

from __future__ import annotations

import pytest

from ..support.fake_kube import FakeKube, point_kubespawner_at
from ..support.governance import governance_database  # noqa: F401 (autouse: spawners' budgets and audit records)


@pytest.fixture
def fake_kube():
    """A running fake API server with no objects but the namespaces every cluster has (default, kube-*)."""
    with FakeKube() as fake:
        yield fake


@pytest.fixture
def kubeconfig(fake_kube, tmp_path, monkeypatch):
    """The path of a kubeconfig for `fake_kube`, set as $KUBECONFIG and as KubeSpawner's config."""
    path = fake_kube.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    undo = point_kubespawner_at(path)
    yield path
    undo()


@pytest.fixture(scope="module")
def rendered_cluster(tmp_path_factory):
    """A fake API server holding what `mlplatform render` writes for helm-values/platform.yaml and the
    Spark operator chart's RBAC (tests/support/rendered_cluster.py): its RBAC and admission policies apply,
    and the platform service's admission webhook answers (tests/support/workload_webhook.py)."""
    from ..support.rendered_cluster import CATALOG, load_rendered_cluster
    from ..support.workload_webhook import workload_webhook

    state = tmp_path_factory.mktemp("rendered-cluster")
    with FakeKube() as fake:
        load_rendered_cluster(fake)
        with workload_webhook(fake, CATALOG, f"sqlite:///{state / 'platform.sqlite'}", state):
            yield fake
