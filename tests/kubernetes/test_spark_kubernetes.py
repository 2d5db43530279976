"""Spark on Kubernetes against the fake API server and a real S3 server (SeaweedFS): the file uploaded
to the team's prefix, a valid SparkApplication, the operator's states followed (the test plays the
operator), the driver's log, cancel, and neither a SparkApplication nor an S3 object left by a failure."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from mlplatform import spark
from mlplatform.spark import SparkBackendError, SparkJob, SparkJobError, UnknownApplicationError
from mlplatform.spark.kubernetes import KubernetesSparkBackend, KubernetesSparkConfig

from mlplatform_core import mlflow_token
from mlplatform_core.catalog import load_catalog
from mlplatform_core.contract import PlatformEnvironment
from hub_config.catalog import DEFAULT_CATALOG
from hub_config.local import seaweedfs

from ..support.catalogs import direct_mode_catalog
from ..support.seaweedfs_server import seaweedfs_server

NS, TEAM, BUCKET, PREFIX = "team-vision", "team-vision", "platform", "teams/team-vision/"
# Clear of the session platform's ports (base … base + 600) and of test_s3_server's (base + 2600 …).
BASE = int(os.environ.get("MLPLATFORM_TEST_PORT_BASE", "25800")) + 3400
NOW = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A SeaweedFS S3 server of its own (admin identity only), with the catalog's bucket."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"), BASE, "us-east-1", BUCKET) as (url, keys):
        yield seaweedfs.admin_client(url, "us-east-1", keys)


def keys(s3, prefix: str = PREFIX) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


@pytest.fixture
def config():
    return KubernetesSparkConfig(namespace=NS, team=TEAM, user="alice", bucket=BUCKET, team_prefix=PREFIX,
                                 s3_endpoint="http://unused", image="mlplatform/spark:0.1.0")


@pytest.fixture
def backend(fake_kube, kubeconfig, s3, config, tmp_path):
    fake_kube.namespace(NS)
    (tmp_path / "wordcount.py").write_text("print('counting words')\n")
    env = PlatformEnvironment(user="alice", team=TEAM, mlflow_tracking_uri="http://mlflow:5000")
    yield KubernetesSparkBackend(config, environment=env, s3=s3, cwd=tmp_path)
    for key in keys(s3):  # the bucket outlives the test
        s3.delete_object(Bucket=BUCKET, Key=key)


def job(**kwargs) -> SparkJob:
    return SparkJob(**{"name": "wordcount", "main_file": "wordcount.py", "arguments": ["data.txt"], **kwargs})


def test_backend_is_chosen_from_the_environment_and_the_catalog():
    env = {"MLPLATFORM_BACKEND": "kubernetes", "MLPLATFORM_NAMESPACE": NS, "MLPLATFORM_TEAM": TEAM,
           "MLPLATFORM_USER": "alice", "MLPLATFORM_S3_BUCKET": BUCKET, "MLPLATFORM_S3_TEAM_PREFIX": PREFIX,
           "MLPLATFORM_S3_ENDPOINT": "http://s3.example:8333", "MLPLATFORM_CATALOG": str(direct_mode_catalog())}
    chosen = spark.backend(env)
    assert isinstance(chosen, KubernetesSparkBackend)
    assert chosen.config == KubernetesSparkConfig(namespace=NS, team=TEAM, user="alice", bucket=BUCKET,
                                                  team_prefix=PREFIX, s3_endpoint="http://s3.example:8333",
                                                  image="mlplatform/spark:0.1.0", service_account="mlplatform-spark")
    with pytest.raises(SparkBackendError, match="^MLPLATFORM_S3_BUCKET, MLPLATFORM_S3_TEAM_PREFIX not set"):
        spark.backend({k: v for k, v in env.items() if "S3" not in k})


def test_submit_uploads_the_file_and_creates_a_valid_spark_application(backend, fake_kube, s3, tmp_path):
    submitted = backend.submit(job())
    app_id = submitted["app_id"]
    key = f"{PREFIX}spark/{app_id}/wordcount.py"
    assert keys(s3) == [key]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"print('counting words')\n"

    stored = fake_kube.get("sparkapplications", app_id, NS)  # the fake validated it against the CRD (strict)
    assert stored["spec"]["mainApplicationFile"] == f"s3a://{BUCKET}/{key}"
    assert stored["spec"]["arguments"] == ["data.txt"] and stored["spec"]["driver"]["serviceAccount"] == "mlplatform-spark"
    assert stored["metadata"]["labels"]["mlplatform.io/user"] == "alice"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in stored["spec"]["driver"]["env"]
    assert submitted == {**submitted, "name": "wordcount", "backend": "kubernetes", "user": "alice",
                         "state": "SUBMITTED", "message": "waiting for the Spark operator", "ui_url": None,
                         "job": {**job().to_dict(), "main_file": str(tmp_path / "wordcount.py")}}


def test_drivers_and_executors_reach_mlflow_with_a_token_projected_for_it(backend, fake_kube):
    """With MLflow's access control and the cluster's issuer in the catalog (the example cluster's), the
    driver and executors mount a service-account token for the audience `mlflow` away from the API
    token's path and MLflow's `mlplatform` plugin reads it; the fake validated the result (CRD, strict)."""
    example = load_catalog(Path(__file__).resolve().parents[2] / "helm-values" / "platform.yaml", environ={})
    assert mlflow_token.enabled(example) and not mlflow_token.enabled(load_catalog(DEFAULT_CATALOG))
    backend.config = dataclasses.replace(backend.config, mlflow_token=True)
    app_id = backend.submit(job())["app_id"]
    spec = fake_kube.get("sparkapplications", app_id, NS)["spec"]
    assert spec["volumes"] == [{"name": "mlflow-token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "mlflow", "expirationSeconds": 3600, "path": "token"}}]}}]
    for pod in (spec["driver"], spec["executor"]):
        assert pod["volumeMounts"] == [{"name": "mlflow-token", "mountPath": "/var/run/secrets/mlflow",
                                        "readOnly": True}]
        env = {e["name"]: e["value"] for e in pod["env"]}
        assert (env["MLFLOW_TRACKING_AUTH"], env["MLPLATFORM_MLFLOW_TOKEN_FILE"]) == (
            "mlplatform", "/var/run/secrets/mlflow/token")


def test_status_follows_the_operator(backend, fake_kube):
    app_id = backend.submit(job())["app_id"]

    def operator(**status):
        fake_kube.patch_status("sparkapplications", app_id, status, namespace=NS)
        return backend.status(app_id)

    assert operator(applicationState={"state": "SUBMITTED"}, driverInfo={})["state"] == "SUBMITTED"
    running = operator(applicationState={"state": "RUNNING"}, driverInfo={
        "podName": f"{app_id}-driver", "webUIServiceName": f"{app_id}-ui-svc", "webUIPort": 4040,
        "webUIAddress": "10.96.3.4:4040"})
    assert (running["state"], running["ui_url"]) == (
        "RUNNING", f"http://{app_id}-ui-svc.team-vision.svc.cluster.local:4040")
    completed = operator(applicationState={"state": "COMPLETED"}, terminationTime=NOW)
    assert (completed["state"], completed["finished_at"], completed["ui_url"]) == ("COMPLETED", NOW, None)

    other = backend.submit(job(name="broken"))["app_id"]
    fake_kube.patch_status("sparkapplications", other, {"driverInfo": {}, "terminationTime": NOW, "applicationState": {
        "state": "FAILED", "errorMessage": "driver container failed with ExitCode: 1\nRuntimeError: empty input"}},
        namespace=NS)
    failed = backend.status(other)
    assert (failed["state"], failed["error"]) == ("FAILED", "RuntimeError: empty input")


def test_logs_come_from_the_driver_pod(backend, fake_kube):
    app_id = backend.submit(job())["app_id"]
    fake_kube.patch_status("sparkapplications", app_id, {"applicationState": {"state": "SUBMITTED"},
                                                         "driverInfo": {"podName": f"{app_id}-driver"}}, namespace=NS)
    assert backend.logs(app_id)["text"] == "" and "no driver log" in backend.logs(app_id)["message"]

    fake_kube.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{app_id}-driver", "namespace": NS},
                    "spec": {"containers": [{"name": "spark-kubernetes-driver", "image": "mlplatform/spark:0.1.0"}]}})
    assert "is waiting to start" in backend.logs(app_id)["message"]
    fake_kube.patch_status("pods", f"{app_id}-driver", {"phase": "Running"}, namespace=NS)
    fake_kube.set_pod_log(NS, f"{app_id}-driver", "".join(f"line {i}\n" for i in range(1, 6)))
    assert backend.logs(app_id, tail=2) == {"app_id": app_id, "text": "line 4\nline 5", "lines": 2, "truncated": True}
    assert backend.logs(app_id, tail=None)["lines"] == 5 and not backend.logs(app_id, tail=None)["truncated"]
    with pytest.raises(SparkJobError, match="^tail: 0 is not allowed"):
        backend.logs(app_id, tail=0)


def test_cancel_deletes_the_application(backend, fake_kube):
    app_id = backend.submit(job())["app_id"]
    fake_kube.patch_status("sparkapplications", app_id, {"applicationState": {"state": "RUNNING"}, "driverInfo": {}},
                           namespace=NS)
    assert backend.cancel(app_id)["state"] == "CANCELLED"
    assert fake_kube.get("sparkapplications", app_id, NS) is None
    with pytest.raises(UnknownApplicationError, match=f"No Spark application '{app_id}' of alice"):
        backend.status(app_id)

    done = backend.submit(job())["app_id"]
    fake_kube.patch_status("sparkapplications", done, {"applicationState": {"state": "COMPLETED"}, "driverInfo": {}},
                           namespace=NS)
    assert backend.cancel(done)["state"] == "COMPLETED"  # a finished one stays as it is
    assert fake_kube.get("sparkapplications", done, NS) is not None


def test_applications_are_the_users_own_newest_first(backend, fake_kube, config, s3, tmp_path):
    first = backend.submit(job())["app_id"]
    second = backend.submit(job(name="second"))["app_id"]
    bob = KubernetesSparkBackend(KubernetesSparkConfig(**{**config.__dict__, "user": "bob"}),
                                 environment=backend.environment, s3=s3, cwd=tmp_path)
    bobs = bob.submit(job())["app_id"]
    assert [a["app_id"] for a in backend.applications()] == [second, first]
    assert [a["app_id"] for a in bob.applications()] == [bobs]
    with pytest.raises(UnknownApplicationError):
        bob.cancel(first)


@pytest.mark.parametrize("code, after", [(422, False), (403, False), (500, True)])
def test_a_failed_create_leaves_neither_application_nor_upload(backend, fake_kube, s3, code, after):
    fake_kube.fail("create", "sparkapplications", code, f"refused with {code}", after=after)
    with pytest.raises(SparkBackendError, match=f"creating SparkApplication wordcount-[0-9a-f]{{8}} in namespace "
                                                f"team-vision failed \\({code} .*\\): refused with {code}$") as caught:
        backend.submit(job())
    assert fake_kube.token not in str(caught.value)
    assert fake_kube.list("sparkapplications", NS) == []
    assert keys(s3) == []


def test_a_missing_main_file_starts_nothing(backend, fake_kube, s3):
    fake_kube.clear_requests()
    with pytest.raises(SparkJobError, match="^main_file: 'missing.py' does not exist"):
        backend.submit(job(main_file="missing.py"))
    assert fake_kube.count() == 0 and keys(s3) == []


def test_a_main_file_already_in_the_image_is_not_uploaded(backend, fake_kube, s3):
    app_id = backend.submit(job(main_file="local:///opt/spark/examples/wordcount.py"))["app_id"]
    stored = fake_kube.get("sparkapplications", app_id, NS)
    assert stored["spec"]["mainApplicationFile"] == "local:///opt/spark/examples/wordcount.py"
    assert keys(s3) == []
