"""Kubernetes names the platform shares: naming rules, label keys, the team ConfigMap and its mount.

The hub labels notebook pods, the notebook labels RayServices and SparkApplications, the renderer
labels namespaces, and the hub's quota cache counts GPUs by these labels: one spelling for all.
"""

from __future__ import annotations

import re

# An application, job or namespace name: a DNS label starting with a letter (it becomes object and
# service names). The catalog's slugs (teams, profiles, GPU types) may start with a digit.
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MAX_DNS_LABEL = 63
# A DNS subdomain (RFC 1123): dot-separated DNS labels, 253 characters at most, e.g. a cluster's domain.
DNS_SUBDOMAIN_PATTERN = r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
# The kubelet's default --cluster-domain: what a Service's name ends with (catalog `kubernetes.cluster_domain`).
CLUSTER_DOMAIN = "cluster.local"
# KubeRay gives a RayService's cluster a 6-character suffix and its services "-serve-svc"; a Spark
# application id is `<name>-<8 hex>` and the operator names its UI service `<app id>-ui-svc`.
MAX_SERVING_NAME = 47
MAX_SPARK_NAME = 47

LABEL_PREFIX = "mlplatform.io/"  # also the prefix of the annotations the platform writes
TEAM_LABEL = LABEL_PREFIX + "team"
USER_LABEL = LABEL_PREFIX + "user"
PROFILE_LABEL = LABEL_PREFIX + "profile"
GPU_TYPE_LABEL = LABEL_PREFIX + "gpu-type"  # the hub's quota cache counts GPUs per type over this label
GPU_COUNT_LABEL = LABEL_PREFIX + "gpu-count"
APP_ID_LABEL = LABEL_PREFIX + "app-id"
APP_NAME_LABEL = LABEL_PREFIX + "app-name"
NODE_POOL_LABEL = LABEL_PREFIX + "node-pool"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY = "mlplatform"
SERVING_COMPONENT = "model-serving"
SERVE_PORT = 8000  # Ray Serve's HTTP port on a RayService's pods and its Service `<name>-serve-svc`

# Each team's rollout gateway on a cluster: a Deployment and Service `<GATEWAY_PREFIX><team>` in the hub's namespace
# (hub_config/render/gateway.py), where callers reach the team's endpoints (serving/kubernetes.py `url`).
GATEWAY_PREFIX = "mlplatform-gateway-"
GATEWAY_COMPONENT = "rollout-gateway"
GATEWAY_PORT = 8000
GATEWAY_RUN_DIRECTORY = "/run/mlplatform-gateway"  # an emptyDir of its pod: sockets and HAProxy's configuration
MAX_TEAM_WITH_GATEWAY = MAX_DNS_LABEL - len(GATEWAY_PREFIX)


def service_host(service: str, namespace: str, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """A Service's fully qualified name, as pods of the cluster call it (no search list to walk)."""
    return f"{service}.{namespace}.svc.{cluster_domain}"


def gateway_host(team: str, hub_namespace: str, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """The team's gateway Service, host:port, as pods of the cluster call it."""
    return f"{service_host(GATEWAY_PREFIX + team, hub_namespace, cluster_domain)}:{GATEWAY_PORT}"


def gateway_traffic(team: str) -> str:
    """The ConfigMap in the hub's namespace holding the traffic of the team's endpoints in rollout: written by the
    platform service (mlplatform_service/traffic_maps.py), applied by every replica of the team's gateway."""
    return f"{GATEWAY_PREFIX}{team}-traffic"

# The ConfigMap of each team namespace (rendered by `mlplatform render`) that the hub's spawner
# mounts in notebook pods at CONFIG_DIR: the catalog and the AWS config with the credential process.
TEAM_CONFIG_MAP = "mlplatform"
CONFIG_DIR = "/etc/mlplatform"
CATALOG_FILE = "platform.yaml"
AWS_CONFIG_KEY = "aws-config"

_LABEL_VALUE_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(text: str) -> str:
    """`text` made a valid label value (at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends).
    Lossy for unusual usernames: keep the exact value in an annotation where it matters."""
    return _LABEL_VALUE_INVALID.sub("-", text)[:MAX_DNS_LABEL].strip("-_.")


def annotation_key(name: str) -> str:
    return LABEL_PREFIX + name
