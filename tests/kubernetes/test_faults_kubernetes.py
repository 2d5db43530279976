"""The Kubernetes API carries out a create but its answer comes too late: the client times out (the
backends' per-call bound, `mlplatform.kube.TIMEOUT`, shortened here) while the object exists. The
serving and Spark backends say the API server did not answer, and leave nothing behind: no
RayService, no SparkApplication, no uploaded main file (they look for what the timed-out call may
have made, and delete it)."""

from __future__ import annotations

import pytest
from mlplatform import kube
from mlplatform.serving.errors import BackendUnavailable
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig
from mlplatform.spark import SparkBackendError

from .test_serving_kubernetes import NS, TEAM, USER, deploy
from .test_spark_kubernetes import backend as spark_backend  # noqa: F401  (fixtures)
from .test_spark_kubernetes import config, job, keys, s3  # noqa: F401

CLIENT_TIMEOUT = 1
LATE = 3  # the fake answers this long after the write


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch):
    monkeypatch.setattr(kube, "TIMEOUT", CLIENT_TIMEOUT)


def test_a_rayservice_created_but_answered_late_is_deleted(fake_kube, kubeconfig):
    fake_kube.namespace(NS)
    backend = KubernetesServing(KubernetesServingConfig(namespace=NS, team=TEAM, user=USER))
    fake_kube.fail("create", "rayservices", 504, "too late", after=True, delay=LATE)
    with pytest.raises(BackendUnavailable) as caught:
        deploy(backend)
    assert str(caught.value).startswith(f"creating RayService iris in namespace {NS} failed: cannot reach the "
                                        "Kubernetes API server: ReadTimeoutError")
    assert fake_kube.token not in str(caught.value)
    assert fake_kube.list("rayservices", NS) == []
    verbs = [r.verb for r in fake_kube.requests if r.resource == "rayservices"]
    assert verbs[:2] == ["get", "create"] and verbs[-1] == "delete"  # the look-up after the timeout may be retried


def test_a_spark_application_created_but_answered_late_leaves_neither_it_nor_the_upload(  # noqa: F811
        spark_backend, fake_kube, s3):  # noqa: F811
    fake_kube.fail("create", "sparkapplications", 504, "too late", after=True, delay=LATE)
    with pytest.raises(SparkBackendError) as caught:
        spark_backend.submit(job())
    assert "cannot reach the Kubernetes API server: ReadTimeoutError" in str(caught.value)
    assert fake_kube.token not in str(caught.value)
    assert fake_kube.list("sparkapplications", NS) == []
    assert keys(s3) == []
