"""The Kubernetes backend's spawner: KubeSpawner with the catalog's profiles and the cluster's quota.

Each server runs in its team's namespace (not the hub's): the team's ResourceQuota, RBAC and
RayService / SparkApplication objects live there. The chosen GPU type becomes the pod's extended
resource request and limit, node selector and tolerations, merged onto what the deployment
configured (z2jh puts its user-pod node selector and tolerations into `c.KubeSpawner.*`): the
configured values are remembered before the first selection, and every selection is computed from
them, so a CPU server after a GPU one gets exactly the configured placement again. Pods carry
`mlplatform.io/*` labels for team, user, profile and GPU type (cost attribution and the per-type
quota count read them); the user label is `label_value(user)`, as on the notebook's RayServices and
SparkApplications.

Quota comes from the hub's watch-backed cache (kube_quota.py), so the spawn page costs no API
call. The API server's own quota admission is the last word: its "exceeded quota" refusal becomes a
clear spawn error (409), not a 500, and holds nothing for the next spawn.

The notebook gets the environment contract; the catalog and the AWS config (`credential_process`,
no keys) come from the ConfigMap `mlplatform` that `mlplatform render` writes into every team
namespace, mounted at /etc/mlplatform. Its JupyterHub API token is not in the pod spec (anyone in
the namespace who may read pods would see it): it is in a Secret per server (server_token.py),
created before the pod, deleted when the server stops or its start fails.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial

from kubernetes_asyncio.client.rest import ApiException
from jupyterhub.utils import exponential_backoff
from kubespawner import KubeSpawner
from mlplatform_core.names import (
    AWS_CONFIG_KEY,
    CATALOG_FILE,
    CONFIG_DIR,
    GPU_COUNT_LABEL,
    GPU_TYPE_LABEL,
    LABEL_PREFIX,
    PROFILE_LABEL,
    TEAM_CONFIG_MAP,
    TEAM_LABEL,
    USER_LABEL,
    label_value,
)
from tornado import web
from traitlets import Unicode, default

from ..environment import notebook_environment
from ..profiles import QuotaSnapshot, Selection
from .kube_quota import ClusterQuota, cluster_quota, start_with_the_hub
from .profiles_mixin import CatalogProfilesMixin
from .server_token import env_without_token, token_secret, token_secret_name


class QuotaExceeded(web.HTTPError):
    """The API server refused the pod for the namespace's ResourceQuota."""

    def __init__(self, message: str):
        super().__init__(409, "%s", message)
        self.jupyterhub_message = message  # what the spawn page and the progress stream show


class CatalogKubeSpawner(CatalogProfilesMixin, KubeSpawner):
    _configured: dict | None = None  # the deployment's placement, before the first selection
    _reservation: str | None = None  # the quota cache's key of this server's reservation ("namespace/pod")

    config_dir = Unicode(
        CONFIG_DIR,
        config=True,
        help="""
        Where the notebook pod mounts the ConfigMap `mlplatform` of its team namespace (keys
        `platform.yaml`, the catalog, and `aws-config`, the AWS config with the credential process).

            c.CatalogKubeSpawner.config_dir = "/etc/mlplatform"
        """,
    )

    @property
    def quota(self) -> ClusterQuota:
        return cluster_quota(self)

    @classmethod
    async def start_with_the_hub(cls, config) -> None:
        """What the hub starts before any spawner (hub.py): the quota cache and, with it, the usage ledger's reconcile."""
        await start_with_the_hub(cls, config)

    # --- the profile pipeline's backend ---------------------------------------------------------
    def quota_snapshot(self) -> QuotaSnapshot:
        return self.quota.snapshot(self.catalog)

    def reserve(self, selection: Selection) -> None:
        self.release()
        self._reservation = f"{self.catalog.teams[selection.team].namespace}/{self.pod_name}"
        self.quota.reserve(self._reservation, selection)

    def release(self) -> None:
        # The key reserve() used, not one derived from `selection`: a spawn the budget refuses has reserved
        # quota but has no selection yet, and must give the reservation back all the same.
        key, self._reservation = self._reservation, None
        if key is not None:
            self.quota.release(key)

    def apply_selection(self, selection: Selection) -> None:
        catalog = self.catalog
        profile = catalog.profiles[selection.profile]
        self.namespace = catalog.teams[selection.team].namespace
        self.dns_name = self.dns_name_template.format(namespace=self.namespace, name=self.pod_name)
        self.image = profile.image
        self.apply_profile_resources(profile)
        labels = {TEAM_LABEL: selection.team, USER_LABEL: label_value(self.user.name),
                  PROFILE_LABEL: selection.profile}
        # Merge onto the configured placement (never onto an earlier selection's).
        base = self._configured_placement()
        node_selector, tolerations = dict(base["node_selector"]), list(base["tolerations"])
        guarantees, limits = dict(base["guarantees"]), dict(base["limits"])
        if selection.gpu_type:
            gpu = catalog.gpu_types[selection.gpu_type]
            count = str(selection.gpu_count)
            guarantees[gpu.resource] = limits[gpu.resource] = count
            node_selector.update(gpu.node_selector)
            for toleration in (t.model_dump(exclude_none=True) for t in gpu.tolerations):
                if toleration not in tolerations:
                    tolerations.append(toleration)
            labels.update({GPU_TYPE_LABEL: selection.gpu_type, GPU_COUNT_LABEL: count})
        self.node_selector, self.tolerations = node_selector, tolerations
        self.extra_resource_guarantees, self.extra_resource_limits = guarantees, limits
        # Labels of an earlier selection (a GPU type) must not outlive it.
        kept = {k: v for k, v in self.extra_labels.items() if not k.startswith(LABEL_PREFIX)}
        self.extra_labels = {**kept, **labels}
        self.service_account = catalog.kubernetes.service_account
        self.automount_service_account_token = True  # the notebook manages its team's RayServices
        self.volumes = [v for v in self._as_list(self.volumes) if v.get("name") != TEAM_CONFIG_MAP] + [
            {"name": TEAM_CONFIG_MAP, "configMap": {"name": TEAM_CONFIG_MAP}}]
        self.volume_mounts = [m for m in self._as_list(self.volume_mounts) if m.get("name") != TEAM_CONFIG_MAP] + [
            {"name": TEAM_CONFIG_MAP, "mountPath": self.config_dir, "readOnly": True}]

    def _configured_placement(self) -> dict:
        """Node selector, tolerations and extra resources as configured, read before a selection changes them."""
        if self._configured is None:
            self._configured = {"node_selector": dict(self.node_selector),
                                "tolerations": self._as_list(self.tolerations),
                                "guarantees": dict(self.extra_resource_guarantees),
                                "limits": dict(self.extra_resource_limits)}
        return self._configured

    @staticmethod
    def _as_list(value) -> list:
        return list(value.values()) if isinstance(value, dict) else list(value or [])

    # --- JupyterHub / KubeSpawner hooks -----------------------------------------------------------
    @default("options_form")
    def _default_options_form(self):
        async def render(spawner):
            await spawner.quota.ready()  # once per hub; afterwards the page reads the cache only
            return spawner._render_options_form()

        return render

    @default("apply_user_options")
    def _default_apply_user_options(self):
        async def apply(spawner, user_options):
            await spawner.quota.ready()
            spawner._apply_user_options(user_options)  # check + reserve without awaiting: atomic

        return apply

    async def load_user_options(self):
        """Options were applied by the profile pipeline (apply_user_options); KubeSpawner's
        profile_list is not used."""

    def get_env(self):
        env = super().get_env()
        if self.selection is not None:
            # The pod reads the catalog and the AWS config from its mount, not from the hub's paths.
            env.update(notebook_environment(self.catalog, self.user.name, self.selection,
                                            hub_api_url=self.hub.api_url,
                                            aws_config_file=f"{self.config_dir}/{AWS_CONFIG_KEY}",
                                            catalog_path=f"{self.config_dir}/{CATALOG_FILE}",
                                            server_name=self.name, service_url=self.platform_service_url))
        return env_without_token(env, self.token_secret_name)

    # --- the server's API token lives in a Secret, not in the pod spec ------------------------------
    @property
    def token_secret_name(self) -> str:
        return token_secret_name(self.pod_name)

    async def _start(self):
        await self._create_token_secret()
        try:
            return await super()._start()
        except BaseException:
            await self._delete_token_secret()  # nothing left behind by a start that failed
            raise

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            await self._delete_token_secret()

    async def _create_token_secret(self) -> None:
        labels = {k: v for k, v in self.extra_labels.items() if k.startswith(LABEL_PREFIX)}
        secret = token_secret(self.token_secret_name, self.namespace, self.api_token, labels)
        await exponential_backoff(partial(self._make_create_token_secret_request, secret),
                                  f"Could not create Secret {self.namespace}/{self.token_secret_name}",
                                  timeout=self.k8s_api_request_retry_timeout)

    async def _make_create_token_secret_request(self, secret: dict) -> bool:
        """For exponential_backoff: True once created. A Secret of an earlier start (409) holds an old
        token: removed, then created again. Errors are logged without the Secret (it holds the token)."""
        try:
            await asyncio.wait_for(self.api.create_namespaced_secret(self.namespace, secret),
                                   self.k8s_api_request_timeout)
            return True
        except asyncio.TimeoutError:
            return False
        except ApiException as e:
            if e.status == 409:
                await self._ensure_not_exists("secret", self.token_secret_name)
                return False
            self.log.error("Creating Secret %s/%s failed: %s %s", self.namespace, self.token_secret_name, e.status,
                           _status_message(e))
            raise

    async def _delete_token_secret(self) -> None:
        try:
            await exponential_backoff(partial(self._ensure_not_exists, "secret", self.token_secret_name),
                                      f"Could not delete Secret {self.namespace}/{self.token_secret_name}",
                                      timeout=self.k8s_api_request_retry_timeout)
        except Exception as e:  # never hide why the start or stop failed
            self.log.error("The API token Secret %s/%s is left behind: %s", self.namespace, self.token_secret_name, e)

    async def _make_create_pod_request(self, pod, request_timeout):
        """KubeSpawner's, except that a refusal is not logged with the whole pod (its environment holds
        the server's API token), and a quota refusal becomes QuotaExceeded."""
        name = pod.metadata.name
        try:
            await asyncio.wait_for(self.api.create_namespaced_pod(self.namespace, pod), request_timeout)
            return True
        except asyncio.TimeoutError:
            return False  # exponential_backoff tries again
        except ApiException as e:
            if e.status == 409:  # a pod of an earlier start: remove it (only it), then try again
                self.log.info("Found existing pod %s/%s, deleting it", self.namespace, name)
                await KubeSpawner.stop(self, True)
                return False
            if e.status == 403 and "exceeded quota" in (e.body or ""):
                raise QuotaExceeded(self._quota_message(e)) from None
            self.log.error("Creating pod %s/%s failed: %s %s", self.namespace, name, e.status, _status_message(e))
            raise

    def _quota_message(self, error: ApiException) -> str:
        team = self.selection.team if self.selection else self.namespace
        detail = _status_message(error)
        gpus = f" with {self.selection.gpu_count} GPUs" if self.selection and self.selection.gpu_count else ""
        return (f"Cannot start your server{gpus}: team {team}'s quota in namespace {self.namespace} is used up "
                f"({detail}). Choose a smaller profile, or stop another server of your team.")


def _status_message(error: ApiException) -> str:
    """The API server's Status message ("exceeded quota: ..."), without the pod's full name prefix."""
    try:
        message = json.loads(error.body)["message"]
    except (ValueError, KeyError, TypeError):
        message = str(error.reason)
    return message.split(": ", 1)[1] if "is forbidden: " in message else message
