"""The catalog's `kubernetes.cluster_domain`: every in-cluster address the platform makes ends with it (a cluster
whose kubelets run with another --cluster-domain than cluster.local), and a bad one is refused by name."""

from __future__ import annotations

import copy

import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.render.backstage import model_component
from hub_config.render.workload_webhook import webhook_hosts
from mlplatform.serving.kubernetes import KubernetesServing, KubernetesServingConfig
from mlplatform.spark.kubernetes import KubernetesSparkConfig, _ui_url
from mlplatform_core.catalog import CatalogError, parse_catalog
from mlplatform_core.names import service_host
from mlplatform_service.gateway_pod import gateway_spec

BASE = yaml.safe_load(DEFAULT_CATALOG.read_text())
DOMAIN = "k8s.example.internal"
TEAM, NAMESPACE = "team-vision", "team-vision"


def catalog_with(domain: str | None):
    data = copy.deepcopy(BASE)
    if domain is not None:
        data.setdefault("kubernetes", {})["cluster_domain"] = domain
    return parse_catalog(data, environ={})


def test_without_the_key_services_end_with_cluster_local():
    catalog = catalog_with(None)
    assert catalog.kubernetes.cluster_domain == "cluster.local"
    config = KubernetesServingConfig.for_catalog(catalog, namespace=NAMESPACE, team=TEAM, user="alice")
    assert KubernetesServing(config).url("iris") == \
        "http://mlplatform-gateway-team-vision.jupyterhub.svc.cluster.local:8000/iris"


def test_every_in_cluster_address_ends_with_the_catalogs_domain():
    catalog = catalog_with(DOMAIN)
    serving = KubernetesServingConfig.for_catalog(catalog, namespace=NAMESPACE, team=TEAM, user="alice")
    # Callers reach an endpoint through the team's gateway; without a gateway, at KubeRay's serve Service.
    assert KubernetesServing(serving).url("iris") == \
        f"http://mlplatform-gateway-team-vision.jupyterhub.svc.{DOMAIN}:8000/iris"
    assert KubernetesServing(KubernetesServingConfig(namespace=NAMESPACE, team=TEAM, user="alice",
                                                     cluster_domain=DOMAIN)).url("iris") == \
        f"http://iris-serve-svc.team-vision.svc.{DOMAIN}:8000/iris"
    # The gateway pod's upstream: each endpoint's serve Service.
    assert gateway_spec(catalog, TEAM).upstream == (f"{{endpoint}}-serve-svc.team-vision.svc.{DOMAIN}", 8000)
    # The driver's UI Service of a Spark job.
    spark = KubernetesSparkConfig.for_catalog(catalog, KubernetesSparkConfig(
        namespace=NAMESPACE, team=TEAM, user="alice", bucket="platform", team_prefix="teams/team-vision"))
    assert _ui_url({"webUIServiceName": "wc-1a2b3c4d-ui-svc", "webUIPort": 4040}, NAMESPACE,
                   spark.cluster_domain) == f"http://wc-1a2b3c4d-ui-svc.team-vision.svc.{DOMAIN}:4040"
    # The names in the admission webhook's serving certificate.
    assert webhook_hosts(catalog) == ["hub.jupyterhub.svc", f"hub.jupyterhub.svc.{DOMAIN}"]
    # The Backstage Component of a served model links the endpoint as callers reach it.
    component = model_component(catalog, team=TEAM, group="team-vision", namespace=NAMESPACE, name="iris",
                                model_name="iris-classifier", model_version="3")
    assert f"http://mlplatform-gateway-team-vision.jupyterhub.svc.{DOMAIN}:8000/iris" in str(component)


@pytest.mark.parametrize("domain", ["Cluster.Local", "cluster.local.", ".local", "cluster..local", "-x.local",
                                    "svc_domain", "a" * 64 + ".local", ".".join(["abcdefgh"] * 29), ""])
def test_a_domain_that_is_no_dns_name_is_refused_by_name(domain):
    with pytest.raises(CatalogError) as refused:
        catalog_with(domain)
    assert refused.value.problems == [
        f"kubernetes.cluster_domain: {domain!r} is not allowed: must be a DNS domain such as cluster.local: "
        "dot-separated DNS labels (lowercase letters, digits and '-'), no trailing dot, at most 253 characters"]


@pytest.mark.parametrize("domain", ["local", "k8s.example.internal", "c1-eu-west.corp", "a" * 63 + ".local"])
def test_a_dns_domain_is_taken(domain):
    assert catalog_with(domain).kubernetes.cluster_domain == domain


# What a resolver takes as a domain: DNS labels of at most 63 characters, 253 in all (RFC 1123).
RESOLVABLE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab9-.Z_ \n", max_size=70) | st.lists(st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True),
                                                                min_size=1, max_size=5).map(".".join))
def test_any_domain_is_either_refused_by_name_or_makes_resolvable_names(domain):
    try:
        assert catalog_with(domain).kubernetes.cluster_domain == domain
    except CatalogError as e:
        assert e.problems[0].startswith(f"kubernetes.cluster_domain: {domain!r} is not allowed: must be a DNS domain")
        return
    assert RESOLVABLE.match(domain) and service_host("hub", "jupyterhub", domain).endswith(f".svc.{domain}")
