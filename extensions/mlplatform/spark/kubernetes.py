"""The Kubernetes Spark backend: a `SparkApplication` per job in the team's namespace (Spark operator).

submit() uploads the notebook's main file to the team's S3 prefix (`<team prefix>spark/<app id>/<file>`,
with the notebook's own S3 credentials) and creates the SparkApplication that runs it from
`s3a://<bucket>/<key>`; if the create fails, the upload is deleted again. status() maps the
operator's `status.applicationState.state`; logs() reads the driver pod's log; cancel() deletes
the SparkApplication (the operator then removes its pods), so afterwards the application is gone
from applications(); applications() lists the user's by label.

GitOps mode (the catalog's `gitops`; mlplatform/gitops.py): submit() sends the same SparkApplication to the
platform service, which commits it to the team's file (one per application id); cancel() has the file removed
(Argo CD prunes the application, the operator stops its pods). Until Argo CD has applied a commit, status()
says it is waiting for the sync.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlplatform_core import images, mlflow_token
from mlplatform_core.catalog import CatalogError
from mlplatform_core.contract import PlatformEnvironment
from mlplatform_core.names import (APP_NAME_LABEL, CLUSTER_DOMAIN, MANAGED_BY, MANAGED_BY_LABEL, USER_LABEL,
                                   annotation_key, label_value, service_host)
from mlplatform_core.timestamps import now

from .. import kube
from ..gitops import GitOps, GitOpsRefused, waiting_message
from .backend import (CANCELLED, COMPLETED, FAILED, MAX_TAIL, RUNNING, SUBMITTED, TERMINAL_STATES,
                      SparkBackendError, UnknownApplicationError, check_tail)
from .driver_log import job_output
from .job import SparkJob, is_app_id, local_main_file, new_app_id
from .spec import spark_application

DRIVER_CONTAINER = "spark-kubernetes-driver"  # the driver container's name in Spark's driver pod
# The operator's application states (v1beta2) → the backend's.
STATES = {"": SUBMITTED, "NEW": SUBMITTED, "SUBMITTED": SUBMITTED, "PENDING_RERUN": SUBMITTED,
          "INVALIDATING": SUBMITTED, "RUNNING": RUNNING, "UNKNOWN": RUNNING,
          "SUCCEEDING": COMPLETED, "COMPLETED": COMPLETED,  # SUCCEEDING: the driver succeeded, pods go away
          "FAILING": FAILED, "FAILED": FAILED, "SUBMISSION_FAILED": FAILED,
          "SUSPENDING": CANCELLED, "SUSPENDED": CANCELLED}


@dataclasses.dataclass(frozen=True)
class KubernetesSparkConfig:
    """Where jobs run and where their files go: the environment contract and the catalog."""

    namespace: str
    team: str
    user: str
    bucket: str
    team_prefix: str
    s3_endpoint: str | None = None
    image: str = images.SPARK
    service_account: str = "mlplatform-spark"
    mlflow_token: bool = False  # drivers and executors reach MLflow with a token projected for it
    cluster_domain: str = CLUSTER_DOMAIN  # of the driver's UI Service's name

    @classmethod
    def for_environment(cls, environment: PlatformEnvironment) -> KubernetesSparkConfig:
        missing = environment.missing(("namespace", "team", "user", "s3_bucket", "s3_team_prefix"))
        if missing:
            raise SparkBackendError(f"{', '.join(missing)} not set: Spark jobs on Kubernetes need the team's "
                                    "namespace and S3 prefix from the environment contract (a server started by "
                                    "the platform's hub)")
        config = cls(namespace=environment.namespace, team=environment.team, user=environment.user,
                     bucket=environment.s3_bucket, team_prefix=environment.s3_team_prefix,
                     s3_endpoint=environment.s3_endpoint or None)
        if not environment.catalog_path:
            return config
        try:
            catalog = environment.catalog()
        except CatalogError as e:
            raise SparkBackendError(f"cannot read the platform catalog: {e}") from None
        return cls.for_catalog(catalog, config)

    @staticmethod
    def for_catalog(catalog, config: KubernetesSparkConfig) -> KubernetesSparkConfig:
        """`config` with the catalog's Spark image, drivers' service account, MLflow token setting and cluster
        domain (pure)."""
        return dataclasses.replace(config, image=catalog.kubernetes.images.spark,
                                   service_account=catalog.kubernetes.spark_service_account,
                                   mlflow_token=mlflow_token.enabled(catalog),
                                   cluster_domain=catalog.kubernetes.cluster_domain)


class KubernetesSparkBackend:
    """Spark jobs as SparkApplications. `environment`: the notebook's environment contract (its
    FORWARDED_TO_SPARK variables go to the driver and executors); `api_client` and `s3` can be given
    (tests), else made on first use and kept; relative main files are looked up in `cwd` (default:
    the current directory at submit time)."""

    name = "kubernetes"

    def __init__(self, config: KubernetesSparkConfig, *, environment: PlatformEnvironment | None = None,
                 api_client=None, s3=None, cwd: str | Path | None = None, gitops: GitOps | None = None):
        self.config = config
        self.environment = environment or PlatformEnvironment()
        self._client, self._s3, self.cwd = api_client, s3, cwd
        self.gitops = gitops  # GitOps mode: submits and cancels are commits (mlplatform/gitops.py)

    # --- clients -------------------------------------------------------------------------------
    def _api(self):
        if self._client is None:
            self._client = _translated(kube.connect)
        return self._client

    @property
    def applications_api(self) -> kube.CustomObjects:
        return kube.CustomObjects(self._api(), kube.SPARK_APPLICATIONS, self.config.namespace)

    @property
    def s3(self):
        if self._s3 is None:
            import boto3  # the notebook's own credentials: its AWS config's credential_process

            self._s3 = boto3.client("s3", endpoint_url=self.config.s3_endpoint)
        return self._s3

    # --- submit --------------------------------------------------------------------------------
    def main_file(self, main_file: str) -> str:
        """A URI the driver reads (s3a://, local://, https://) as it is; else the notebook's file, uploaded at submit."""
        return main_file if _is_uri(main_file) else str(local_main_file(main_file, self.cwd or os.getcwd()))

    def manifest(self, job: SparkJob, *, app_id: str) -> dict[str, Any]:
        """The SparkApplication submit() creates for `job` (its main file a URI the driver reads), before the
        annotations of this submission (when, the job as asked): pure, so GitOps commits and Backstage
        skeletons are the same object."""
        c = self.config
        return spark_application(job, app_id=app_id, namespace=c.namespace, image=c.image, user=c.user,
                                 team=c.team, service_account=c.service_account, environment=self.environment,
                                 mlflow_token=c.mlflow_token)

    def submit(self, job: SparkJob) -> dict[str, Any]:
        c = self.config
        app_id = new_app_id(job.name)
        uploaded = None
        if _is_uri(job.main_file):  # already where the driver can read it (s3a://, local://, https://)
            main_uri, source = job.main_file, job.main_file
        else:
            path = Path(self.main_file(job.main_file))
            uploaded = f"{c.team_prefix}spark/{app_id}/{path.name}"
            self._upload(path, uploaded)
            main_uri, source = f"s3a://{c.bucket}/{uploaded}", str(path)
        try:
            body = self.manifest(dataclasses.replace(job, main_file=main_uri), app_id=app_id)
            body["metadata"]["annotations"].update({
                annotation_key("submitted-at"): now(),
                annotation_key("job"): json.dumps({**job.to_dict(), "main_file": source}),
            })
            if self.gitops is not None:
                answer = _gitops(self.gitops.commit, "spark", app_id, body,
                                 message=f"{job.name}: {source}, {job.executors} executor(s)")
                return {**self._describe(body), "message": waiting_message(answer), "commit": answer["commit"]}
            created = self._create(body)
        except BaseException:
            if uploaded:
                self._delete_upload(uploaded)
            raise
        return self._describe(created)

    def _upload(self, path: Path, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.upload_file(str(path), self.config.bucket, key)
        except (BotoCoreError, ClientError) as e:
            raise SparkBackendError(f"could not upload {path} to s3://{self.config.bucket}/{key}: {e}") from None

    def _delete_upload(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.delete_object(Bucket=self.config.bucket, Key=key)
        except (BotoCoreError, ClientError):
            pass  # the original error matters more; the key is under the team's prefix, named after the app

    def _create(self, body: dict) -> dict:
        """Create; a failure leaves nothing behind (the app id is fresh: an object of that name is this call's)."""
        try:
            return kube.create_or_clean_up(self.applications_api, body)
        except kube.KubeError as error:
            raise _backend_error(error) from None

    # --- status --------------------------------------------------------------------------------
    def _get(self, app_id: str) -> dict:
        found = _translated(self.applications_api.get, app_id) if is_app_id(app_id) else None
        if found is None and self.gitops is not None and is_app_id(app_id):
            found = self._committed(app_id)
        if found is None or kube.annotation(found, "user") != self.config.user:
            raise UnknownApplicationError(f"No Spark application {app_id!r} of {self.config.user} in namespace "
                                          f"{self.config.namespace}. "
                                          f"Recent ones: {', '.join(self._ids()[:5]) or 'none'}")
        return found

    def _committed(self, app_id: str) -> dict | None:
        """GitOps mode: the application as committed, while Argo CD has not applied it (its status says so)."""
        record = _gitops(self.gitops.committed, "spark", app_id)
        if record.get("object") is None:
            return None
        return {**record["object"], "status": {}, "gitops": {"commit": record["commit"],
                                                             "message": waiting_message(record)}}

    def _ids(self) -> list[str]:
        return [a["app_id"] for a in self.applications()]

    def status(self, app_id: str) -> dict[str, Any]:
        app = self._get(app_id)
        if "gitops" in app:
            return {**self._describe(app), **app["gitops"]}
        return self._describe(app)

    def applications(self) -> list[dict[str, Any]]:
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{USER_LABEL}={label_value(self.config.user)}"
        found = [a for a in _translated(self.applications_api.list, selector)
                 if kube.annotation(a, "user") == self.config.user]  # the label is lossy for unusual names
        found.sort(key=lambda a: (kube.annotation(a, "submitted-at"), a["metadata"]["name"]), reverse=True)
        return [self._describe(a) for a in found]

    def _describe(self, app: dict) -> dict[str, Any]:
        meta, status = app["metadata"], app.get("status") or {}
        operator_state = (status.get("applicationState") or {}).get("state", "")
        state = STATES.get(operator_state, RUNNING)
        driver = status.get("driverInfo") or {}
        error = None
        if meta.get("deletionTimestamp"):
            state, message = CANCELLED, "cancelling: the operator is removing the pods"
        elif state == SUBMITTED:
            message = "waiting for the Spark operator" if not operator_state else "submitted; the driver is starting"
        elif state == RUNNING:
            message = f"running ({operator_state.lower()})" if operator_state != "RUNNING" else "running"
        elif state == COMPLETED:
            message = "finished successfully"
        elif state == FAILED:
            detail = (status.get("applicationState") or {}).get("errorMessage") or ""
            lines = [line.strip() for line in detail.splitlines() if line.strip()]
            error = lines[-1][:500] if lines else None
            message = f"{operator_state.lower().replace('_', ' ')}; the driver log has the details"
        else:
            message = "cancelled"
        job = json.loads(kube.annotation(app, "job") or "{}")
        return {
            "app_id": meta["name"], "name": job.get("name") or (meta.get("labels") or {}).get(APP_NAME_LABEL),
            "backend": self.name, "user": kube.annotation(app, "user"), "state": state,
            "submitted_at": kube.annotation(app, "submitted-at") or meta.get("creationTimestamp"),
            "finished_at": status.get("terminationTime") if state in TERMINAL_STATES else None,
            "ui_url": _ui_url(driver, meta.get("namespace", ""), self.config.cluster_domain)
            if state == RUNNING else None,
            "message": message, "error": error, "job": job, "namespace": meta.get("namespace"),
            "operator_state": operator_state or None, "driver_pod": driver.get("podName"),
            "main_application_file": (app.get("spec") or {}).get("mainApplicationFile"),
        }

    # --- logs and cancel -------------------------------------------------------------------------
    def logs(self, app_id: str, tail: int | None = 100) -> dict[str, Any]:
        check_tail(tail)
        app = self._get(app_id)
        pod = ((app.get("status") or {}).get("driverInfo") or {}).get("podName") or f"{app_id}-driver"
        pods = kube.Pods(self._api(), self.config.namespace)
        try:  # one line more than asked tells whether lines were left out
            text = pods.log(pod, DRIVER_CONTAINER, None if tail is None else tail + 1)
        except kube.KubeError as e:
            if e.status in (400, 404):  # not started yet, or already removed
                return {"app_id": app_id, "text": "", "lines": 0, "truncated": False,
                        "message": f"no driver log: {e.message}"}
            raise _backend_error(e) from None
        lines = text.splitlines()
        truncated = tail is not None and len(lines) > tail
        lines = lines[-tail:] if tail is not None else lines
        return {"app_id": app_id, "text": "\n".join(lines), "lines": len(lines), "truncated": truncated}

    def output(self, app_id: str, tail: int | None = 100) -> dict[str, Any]:
        """The driver pod's log is both streams in one: Spark's log4j records are taken out of its last
        MAX_TAIL lines (all of it with None), and the last `tail` lines of what is left answered."""
        check_tail(tail)
        log = self.logs(app_id, None if tail is None else MAX_TAIL)
        lines = job_output(log["text"].splitlines())
        truncated = log["truncated"] or (tail is not None and len(lines) > tail)
        lines = lines[-tail:] if tail is not None else lines
        return {**log, "text": "\n".join(lines), "lines": len(lines), "truncated": truncated}

    def cancel(self, app_id: str) -> dict[str, Any]:
        """Delete the SparkApplication (the operator stops the driver and executors); answers its last
        status as CANCELLED. A finished application is left as it is."""
        app = self._get(app_id)
        current = self._describe(app)
        if current["state"] in TERMINAL_STATES:
            return current
        if self.gitops is not None:
            answer = _gitops(self.gitops.remove, "spark", app_id, message=f"cancelled from the notebook at {now()}")
            commit = answer["commit"]
            return {**current, "state": CANCELLED, "ui_url": None, "finished_at": now(), "commit": commit,
                    "message": f"removed from Git in {commit['short']}: waiting for {answer['waiting_for']} (the "
                               "operator then stops the driver and executors)"}
        _translated(self.applications_api.delete, app_id)
        return {**current, "state": CANCELLED, "message": f"cancelled at {now()}", "ui_url": None,
                "finished_at": now()}


def _is_uri(main_file: str) -> bool:
    scheme = urlparse(main_file).scheme
    return len(scheme) > 1 and scheme != "file"


def _ui_url(driver: dict, namespace: str, cluster_domain: str) -> str | None:
    """The Spark UI: the ingress when there is one (reachable from the browser), else its service."""
    if driver.get("webUIIngressAddress"):
        address = driver["webUIIngressAddress"]
        return address if "://" in address else f"http://{address}"
    if driver.get("webUIServiceName") and driver.get("webUIPort"):
        return f"http://{service_host(driver['webUIServiceName'], namespace, cluster_domain)}:{driver['webUIPort']}"
    if driver.get("webUIAddress"):
        return f"http://{driver['webUIAddress']}"
    return None


def _gitops(call, *args, **kwargs) -> dict:
    """A call of the platform service's GitOps API; its refusal as the backend's error (the service's reason)."""
    try:
        return call(*args, **kwargs)
    except GitOpsRefused as refused:
        raise SparkBackendError(f"the platform service did not commit the change ({refused.status}): {refused}") \
            from None


def _backend_error(error: kube.KubeError) -> SparkBackendError:
    return SparkBackendError(str(error))


_translated = kube.translating(_backend_error)
