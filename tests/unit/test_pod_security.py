"""Pod Security: team namespaces enforce Baseline, and every pod the platform's builders define for
them passes it. The check (hub_config/render/pod_security.py) implements the Baseline controls of the
Kubernetes Pod Security Standards; the tests below pin each control, then run it over the RayService
head and worker templates, the SparkApplication's driver and executor and the pre-pull DaemonSets.
(The notebook pods KubeSpawner makes: tests/kubernetes/test_pod_security_notebooks.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplatform.serving.spec import PodResources, ray_service, serving_request
from mlplatform.spark import SparkJob, spark_application
from mlplatform_core.catalog import load_catalog
from hub_config.render.pod_security import baseline_problems
from hub_config.render.prepull import prepull_daemonsets
from hub_config.render.teams import team_objects

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "helm-values" / "platform.yaml", environ={})
POD = {"containers": [{"name": "app", "image": "registry.example.org/app:1"}]}


def with_container(**security_context) -> dict:
    return {"containers": [{"name": "app", "image": "registry.example.org/app:1", "securityContext": security_context}]}


def test_every_team_namespace_enforces_baseline():
    for team in CATALOG.teams:
        [namespace] = [o for o in team_objects(CATALOG, team) if o["kind"] == "Namespace"]
        labels = namespace["metadata"]["labels"]
        assert {k: v for k, v in labels.items() if k.startswith("pod-security.kubernetes.io/")} == {
            "pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "v1.33",
            "pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/warn": "restricted"}


def test_a_minimal_pod_and_what_baseline_still_allows_pass():
    assert baseline_problems(POD) == []
    assert baseline_problems({
        "hostNetwork": False, "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"},
                                                  "sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}],
                                                  "seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"}},
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "mlplatform"}}],
        "initContainers": [{"name": "init", "securityContext": {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE"],
                                                                                  "drop": ["ALL"]}}}],
        "containers": [{"name": "app", "ports": [{"containerPort": 8888, "hostPort": 0}],
                        "securityContext": {"privileged": False, "procMount": "Default",
                                            "appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}}],
    }, {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}) == []


@pytest.mark.parametrize("spec,annotations,problem", [
    ({**POD, "hostNetwork": True}, None, "spec.hostNetwork: true (host namespaces are not allowed)"),
    ({**POD, "hostPID": True}, None, "spec.hostPID: true (host namespaces are not allowed)"),
    ({**POD, "hostIPC": True}, None, "spec.hostIPC: true (host namespaces are not allowed)"),
    ({**POD, "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, None,
     "spec.volumes[0].hostPath: host path volumes are not allowed"),
    (with_container(privileged=True), None,
     "spec.containers[0].securityContext.privileged: true (privileged containers are not allowed)"),
    ({**POD, "initContainers": [{"name": "i", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}]},
     None, "spec.initContainers[0].securityContext.capabilities.add: ['NET_ADMIN'] (allowed: AUDIT_WRITE, CHOWN, "
           "DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT)"),
    ({**POD, "ephemeralContainers": [{"name": "e", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
     None, "spec.ephemeralContainers[0].securityContext.capabilities.add: ['SYS_ADMIN'] (allowed: AUDIT_WRITE, "
           "CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, "
           "SYS_CHROOT)"),
    ({"containers": [{"name": "app", "ports": [{"containerPort": 80, "hostPort": 80}]}]}, None,
     "spec.containers[0].ports[0].hostPort: 80 (host ports are not allowed)"),
    ({**POD, "securityContext": {"windowsOptions": {"hostProcess": True}}}, None,
     "spec.securityContext.windowsOptions.hostProcess: true (HostProcess is not allowed)"),
    (with_container(seLinuxOptions={"type": "spc_t"}), None,
     "spec.containers[0].securityContext.seLinuxOptions.type: 'spc_t' (allowed: container_engine_t, "
     "container_init_t, container_kvm_t, container_t)"),
    ({**POD, "securityContext": {"seLinuxOptions": {"user": "system_u"}}}, None,
     "spec.securityContext.seLinuxOptions.user: 'system_u' (must not be set)"),
    (with_container(seccompProfile={"type": "Unconfined"}), None,
     "spec.containers[0].securityContext.seccompProfile.type: 'Unconfined' (allowed: Localhost, RuntimeDefault)"),
    ({**POD, "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}, None,
     "spec.securityContext.appArmorProfile.type: 'Unconfined' (allowed: Localhost, RuntimeDefault)"),
    (POD, {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"},
     "metadata.annotations['container.apparmor.security.beta.kubernetes.io/app']: 'unconfined' (allowed: "
     "runtime/default, localhost/*)"),
    (with_container(procMount="Unmasked"), None,
     "spec.containers[0].securityContext.procMount: 'Unmasked' (allowed: Default)"),
    ({**POD, "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}}, None,
     "spec.securityContext.sysctls[0].name: 'kernel.msgmax' (not a safe sysctl)"),
])
def test_each_baseline_control(spec, annotations, problem):
    assert baseline_problems(spec, annotations) == [problem]


def test_z2jh_cloud_metadata_init_container_would_be_refused():
    """What the chart adds to every user pod with singleuser.cloudMetadata.blockWithIptables (its
    default): the reason the rendered values switch it off (the NetworkPolicies block instead)."""
    block = {"name": "block-cloud-metadata", "image": "quay.io/jupyterhub/k8s-network-tools:4.3.2",
             "command": ["iptables", "-A", "OUTPUT", "-d", "169.254.169.254", "-j", "DROP"],
             "securityContext": {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}}}
    assert baseline_problems({**POD, "initContainers": [block]}) == [
        "spec.initContainers[0].securityContext.privileged: true (privileged containers are not allowed)",
        "spec.initContainers[0].securityContext.capabilities.add: ['NET_ADMIN'] (allowed: AUDIT_WRITE, CHOWN, "
        "DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT)"]


@pytest.mark.parametrize("kwargs", [{"replicas": 2}, {"min_replicas": 0, "max_replicas": 4, "gpus": 1, "cpus": 4}],
                         ids=["cpu", "gpu-autoscaling"])
def test_rayservice_head_and_worker_pods_pass_baseline(kwargs):
    request = serving_request(name="iris", model_uri="models:/iris@champion", **kwargs)
    service = ray_service(request, namespace="team-vision", model_version="3", env={"MLPLATFORM_TEAM": "team-vision"},
                          node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                          tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                          service_account="mlplatform-serving", resources=PodResources())
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    assert len(templates) == 2
    for template in templates:
        assert baseline_problems(template["spec"], template["metadata"].get("annotations")) == []


# SparkApplication driver/executor fields that cannot break Baseline; any other field the builder sets
# must be mapped onto the pod below before this test may pass.
SPARK_POD_HARMLESS = {"cores", "coreLimit", "coreRequest", "memory", "memoryOverhead", "serviceAccount", "labels",
                      "annotations", "env", "instances", "nodeSelector", "tolerations", "gpu", "image"}


def spark_pod(application: dict, role: str) -> dict:
    """The pod spec the Spark operator makes of `role` (driver, executor), as far as the spec defines it."""
    spec = application["spec"]
    part = spec[role]
    unmapped = set(part) - SPARK_POD_HARMLESS - {"hostNetwork", "podSecurityContext", "securityContext", "sidecars",
                                                 "initContainers", "volumeMounts", "ports"}
    assert not unmapped, f"map {unmapped} of the SparkApplication's {role} onto its pod in this test"
    container = {"name": f"spark-kubernetes-{role}", "securityContext": part.get("securityContext") or {},
                 "ports": part.get("ports") or []}
    return {"hostNetwork": part.get("hostNetwork", False), "securityContext": part.get("podSecurityContext") or {},
            "volumes": spec.get("volumes") or [], "initContainers": part.get("initContainers") or [],
            "containers": [container, *(part.get("sidecars") or [])]}


def test_spark_driver_and_executor_pods_pass_baseline():
    job = SparkJob(name="wordcount", main_file="s3a://platform/users/alice/wordcount.py", executors=2,
                   conf={"spark.sql.shuffle.partitions": "8"})
    application = spark_application(job, app_id="wordcount-3f9a1c2e", namespace="team-vision",
                                    image="registry.example.org/mlplatform/spark:0.1.0", user="alice",
                                    team="team-vision", service_account="mlplatform-spark")
    assert "volumes" not in application["spec"] and "sparkConf" in application["spec"]
    assert not any(k.startswith("spark.kubernetes.") for k in application["spec"]["sparkConf"])
    for role in ("driver", "executor"):
        assert baseline_problems(spark_pod(application, role)) == []
    # The mapping sees what a SparkApplication could ask for.
    application["spec"]["driver"]["hostNetwork"] = True
    application["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
    assert baseline_problems(spark_pod(application, "driver")) == [
        "spec.hostNetwork: true (host namespaces are not allowed)",
        "spec.volumes[0].hostPath: host path volumes are not allowed"]


@pytest.mark.parametrize("pool", sorted(prepull_daemonsets(CATALOG)))
def test_prepull_daemonsets_pass_baseline_too(pool):
    """They run in the hub's namespace, not a team's; checked all the same (nobody, all capabilities dropped)."""
    template = prepull_daemonsets(CATALOG)[pool]["spec"]["template"]
    assert baseline_problems(template["spec"], template["metadata"].get("annotations")) == []
