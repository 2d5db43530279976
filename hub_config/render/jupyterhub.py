"""Values for the zero-to-jupyterhub chart (jupyterhub/values.yaml, values.schema.yaml), from the catalog.

Only overrides of the chart's defaults; `validation.validate_jupyterhub_values` merges them onto the
chart's values.yaml (as helm does) and checks the result against its schema.

The hub image has this bundle installed. `hub.extraConfig` calls `configure_hub` (hub_config/hub.py)
with the catalog mounted from `hub.extraFiles`; the spawner is `CatalogKubeSpawner` (entry point
`mlplatform-kubernetes`), which starts each server in its team's namespace. The chart's idle culler
runs from the `cull` values at the catalog's timeouts, per profile (hub_config/culling.py). Secrets
never appear in the values: the OAuth client secret and the MLflow signing key come from the Secret
HUB_SECRET; the auth_state key is the chart's own (CryptKeeper.keys, generated into its hub Secret).

The platform service (hub_config/platform_service.py) runs as a hub-managed service in the hub pod, as the
chart's culler does, from `hub.extraConfig` (`platform_service_config`): it listens on all interfaces of the
pod at PLATFORM_SERVICE_PORT, which the hub Service exposes (`hub.service.extraPorts`). The proxy routes
/services/mlplatform/ to `http://hub:<port>` (the Service, in its own namespace); servers, in the team
namespaces, reach it at `http://hub.<hub namespace>.svc:<port>` (their MLPLATFORM_SERVICE_URL). The hub's
NetworkPolicy admits the proxy pods and the team namespaces' notebook pods on that port, and the proxy's
policy lets it out to the hub pod there (an explicit rule, as the chart's own for 8081: network plugins that
match pods by selectors only, such as Cilium, ignore its private-IP rule for pods). Its database is the
catalog's `platform_service.database_url`: by default SQLite on the hub's database volume (/srv/jupyterhub,
the only place z2jh's hub pod writes); for PostgreSQL the URL refers to `${MLPLATFORM_DB_PASSWORD}`, which
render leaves a reference (common.HUB_SECRET_VARIABLES) and the hub pod sets from HUB_SECRET's key
`service-database-password` and hands on to the service (a managed service does not inherit the hub's
environment).
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any
from urllib.parse import urlparse

from mlplatform_core.catalog import Catalog
from mlplatform_core.contract import variable
from mlplatform_core.quantities import parse_cpu, parse_memory

from ..culling import STATE_ROLE, chart_cull_values, state_role
from ..platform_service import SERVICE as PLATFORM_SERVICE
from .common import (CATALOG_PATH, HUB_API_PORT, HUB_SECRET_VARIABLES, HUB_SERVICE, catalog_document,
                     hub_secret_references)
from .images import split_image
from .network import HUB_POD, NOTEBOOK_POD, PROXY_POD, pods_of
from .workload_webhook import WEBHOOK_CONFIGURATION as WORKLOAD_WEBHOOK
from .workload_webhook import WEBHOOK_PORT, webhook_hosts

HUB_SECRET = "mlplatform-hub"  # keys: oauth-client-secret, mlflow-signing-key (README, "Deploy on Kubernetes")
# The hub's MLflow signing key (PEM), from HUB_SECRET, mounted read-only for the hub's user only.
MLFLOW_SIGNING_KEY = "/etc/mlplatform/mlflow/signing.pem"
SPAWNER = "mlplatform-kubernetes"  # entry point of hub_config.spawners.kubernetes:CatalogKubeSpawner
TLS_SECRET = "mlplatform-hub-tls"
EXTRA_CONFIG = f"""\
from hub_config.hub import configure_hub
from mlplatform_core.catalog import load_catalog

configure_hub(c, load_catalog({CATALOG_PATH!r}))
"""
# After the chart's config made its culler service (cull values): each profile's timeout (hub_config/culling.py).
CULLING_CONFIG = f"""\
from hub_config.culling import extend_chart_culler
from mlplatform_core.catalog import load_catalog

extend_chart_culler(c, load_catalog({CATALOG_PATH!r}))
"""
PLATFORM_SERVICE_PORT = 10101  # the platform service in the hub pod, on the hub Service
# The service's admission webhook settings (mlplatform_service.app) and what its Kubernetes client needs.
WEBHOOK_BIND, WEBHOOK_HOSTS = "MLPLATFORM_WEBHOOK_BIND", "MLPLATFORM_WEBHOOK_HOSTS"
WEBHOOK_CONFIGURATION = "MLPLATFORM_WEBHOOK_CONFIGURATION"
KUBERNETES_VARIABLES = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG")


def _secret_env(key: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": HUB_SECRET, "key": key}}}


def _image(ref: str) -> dict[str, str]:
    name, tag = split_image(ref)
    return {"name": name, "tag": tag}


def default_profile(catalog: Catalog):
    """The profile marked default, else the first one."""
    return next((p for p in catalog.profiles.values() if p.default), next(iter(catalog.profiles.values())))


def _resources(resource, parse) -> dict[str, Any]:
    # KubeSpawner's memory traits take K/M/G/T suffixes only (no "Gi"), and the schema wants CPU as a
    # number: both are handed over as plain numbers (bytes, cores).
    return {key: parse(value) for key, value in (("limit", resource.limit), ("guarantee", resource.guarantee))
            if value is not None}


def jupyterhub_values(catalog: Catalog) -> dict[str, Any]:
    k8s = catalog.kubernetes
    url = urlparse(k8s.public_url)
    profile = default_profile(catalog)
    singleuser: dict[str, Any] = {
        "image": _image(profile.image),
        "serviceAccountName": k8s.service_account,
        # Off: the chart's block is a privileged init container, which the team namespaces' Pod
        # Security (baseline) refuses; their NetworkPolicies block the metadata server (network.py).
        "cloudMetadata": {"blockWithIptables": False},
    }
    for key, resource, parse in (("cpu", profile.cpu, parse_cpu), ("memory", profile.memory, parse_memory)):
        if limits := _resources(resource, parse):
            singleuser[key] = limits
    ingress: dict[str, Any] = {"enabled": True, "hosts": [url.hostname]}
    if url.scheme == "https":
        ingress["tls"] = [{"hosts": [url.hostname], "secretName": TLS_SECRET}]
    return {
        "hub": {
            "image": _image(k8s.images.hub),
            "config": {
                "JupyterHub": {
                    "authenticator_class": "keycloak",
                    "spawner_class": SPAWNER,
                    # User servers run in the team namespaces: the hub's short Service name does not
                    # resolve there.
                    "hub_connect_url": f"http://{HUB_SERVICE}.{k8s.hub_namespace}.svc:{HUB_API_PORT}",
                },
                "KeycloakOAuthenticator": {
                    "oauth_callback_url": f"{url.scheme}://{url.netloc}/hub/oauth_callback",
                    # Keycloak access tokens live minutes: check and refresh them often.
                    "auth_refresh_age": 60,
                },
                **({"MlflowAccess": {"signing_key_file": MLFLOW_SIGNING_KEY}}
                   if catalog.mlflow.access.mode == "hub-tokens" else {}),
            },
            "extraEnv": {
                variable("catalog_path"): CATALOG_PATH,
                # No JUPYTERHUB_CRYPT_KEY: the chart's config sets CryptKeeper.keys from its own Secret (made
                # at install, kept on upgrade), which wins over the variable.
                "OAUTH_CLIENT_SECRET": _secret_env("oauth-client-secret"),
                # What the catalog refers to of HUB_SECRET (the platform service's database password).
                **{name: _secret_env(HUB_SECRET_VARIABLES[name]) for name in hub_secret_references(catalog)},
            },
            "extraFiles": {"mlplatform-catalog": {"mountPath": CATALOG_PATH, "stringData": catalog_document(catalog)}},
            "extraConfig": {"mlplatform": EXTRA_CONFIG, **_culling_config(catalog),
                            "mlplatform-service": platform_service_config(catalog)},
            # The chart's culler reads which profile each server runs (hub_config/culling.py).
            **({"loadRoles": {STATE_ROLE: state_role()}} if catalog.culling.enabled else {}),
            **_mlflow_signing_key(catalog),
            "service": {"extraPorts": [{"name": PLATFORM_SERVICE, "port": PLATFORM_SERVICE_PORT,
                                        "targetPort": PLATFORM_SERVICE_PORT, "protocol": "TCP"},
                                       {"name": "admission", "port": WEBHOOK_PORT, "targetPort": WEBHOOK_PORT,
                                        "protocol": "TCP"}]},
            "networkPolicy": {
                # Lets labelled user pods in the (labelled) team namespaces reach the hub API.
                "interNamespaceAccessLabels": "accept",
                # The platform service: the proxy (browsers) and the notebooks of the team namespaces.
                "ingress": [{"ports": [{"protocol": "TCP", "port": PLATFORM_SERVICE_PORT}], "from": [
                    {"podSelector": {"matchLabels": dict(PROXY_POD)}},
                    *(pods_of(team.namespace, NOTEBOOK_POD) for team in catalog.teams.values())]},
                    # The admission webhook: the API server, which is no pod a selector could name; with the
                    # cluster's pod ranges known, every address but the pods'.
                    {"ports": [{"protocol": "TCP", "port": WEBHOOK_PORT}], **_not_from_pods(k8s.pod_cidrs)}],
            },
        },
        "proxy": {
            "service": {"type": "ClusterIP"},
            "chp": {"networkPolicy": {"egress": [{"to": [{"podSelector": {"matchLabels": dict(HUB_POD)}}],
                                                  "ports": [{"protocol": "TCP", "port": PLATFORM_SERVICE_PORT}]}]}},
        },
        "ingress": ingress,
        "cull": chart_cull_values(catalog),
        "singleuser": singleuser,
        # prepull/ holds the pre-pull DaemonSets, one per node pool, for every profile's image.
        "prePuller": {"hook": {"enabled": False}, "continuous": {"enabled": False}},
    }


def platform_service_config(catalog: Catalog) -> str:
    """`hub.extraConfig` of the platform service: a managed service in the hub pod (see the module's docstring)."""
    port, hub_namespace = PLATFORM_SERVICE_PORT, catalog.kubernetes.hub_namespace
    expressions = {variable("catalog_path"): repr(CATALOG_PATH)}  # the environment, as Python source
    if catalog.mlflow.access.mode == "hub-tokens":
        expressions["MLPLATFORM_MLFLOW_SIGNING_KEY"] = repr(MLFLOW_SIGNING_KEY)
    expressions |= {WEBHOOK_BIND: repr(f"0.0.0.0:{WEBHOOK_PORT}"), WEBHOOK_HOSTS: repr(",".join(webhook_hosts(catalog))),
                    WEBHOOK_CONFIGURATION: repr(WORKLOAD_WEBHOOK)}
    expressions |= {name: f"os.environ[{name!r}]" for name in hub_secret_references(catalog)}
    entries = "".join(f"        {name!r}: {value},\n" for name, value in expressions.items())
    # The API server's address (in-cluster config), or the kubeconfig a hub outside a cluster uses.
    kubernetes = "".join(f"        **({{{name!r}: os.environ[{name!r}]}} if {name!r} in os.environ else {{}}),\n"
                         for name in KUBERNETES_VARIABLES)
    return "import os\n\n" + f"""\
from hub_config.platform_service import configure_platform_service
from mlplatform_core.catalog import load_catalog

configure_platform_service(
    c, load_catalog({CATALOG_PATH!r}),
    url={f"http://{HUB_SERVICE}:{port}"!r},
    url_for_servers={f"http://{HUB_SERVICE}.{hub_namespace}.svc:{port}"!r},
    bind_url={f"http://0.0.0.0:{port}"!r},
    # A managed service gets none of the hub's variables but these (and JupyterHub's own).
    environment={{
{entries}{kubernetes}    }},
)
"""


def _not_from_pods(pod_cidrs: list[str]) -> dict[str, Any]:
    if not pod_cidrs:
        return {}
    blocks = {4: "0.0.0.0/0", 6: "::/0"}
    versions = sorted({ip_network(c).version for c in pod_cidrs})
    return {"from": [{"ipBlock": {"cidr": blocks[v], "except": [c for c in pod_cidrs if ip_network(c).version == v]}}
                     for v in versions]}


def _culling_config(catalog: Catalog) -> dict[str, Any]:
    return {"mlplatform-culling": CULLING_CONFIG} if catalog.culling.enabled else {}


def _mlflow_signing_key(catalog: Catalog) -> dict[str, Any]:
    """The Secret's key `mlflow-signing-key` as a file: the hub signs MLflow tokens with it."""
    if catalog.mlflow.access.mode != "hub-tokens":
        return {}
    directory, _, filename = MLFLOW_SIGNING_KEY.rpartition("/")
    return {
        "extraVolumes": [{"name": "mlflow-signing-key", "secret": {
            "secretName": HUB_SECRET, "defaultMode": 0o440,  # the hub user reads it through fsGroup
            "items": [{"key": "mlflow-signing-key", "path": filename}]}}],
        "extraVolumeMounts": [{"name": "mlflow-signing-key", "mountPath": directory, "readOnly": True}],
    }
