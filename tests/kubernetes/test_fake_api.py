"""The fake API server answers as the real one does: the behaviour the other Kubernetes tests rely on."""

from __future__ import annotations

import asyncio
import json
import time

import kubernetes
import kubernetes_asyncio
import pytest

from ..support.fake_kube import ApiError, FakeKube

NS = "team-vision"


def pod(name: str, gpus: int = 0, labels: dict | None = None, **resources) -> dict:
    requests = {**resources, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    container = {"name": "notebook", "image": "jupyter/base:1"}
    if requests:
        container["resources"] = {"requests": requests, "limits": dict(requests)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [container]}}


def ray_service(name: str, **extra_spec) -> dict:
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name},
            "spec": {"serveConfigV2": "applications: []", **extra_spec, "rayClusterConfig": {"headGroupSpec": {
                "rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head", "image": "ray:2"}]}}}}}}


@pytest.fixture
def core(fake_kube, kubeconfig):
    fake_kube.namespace(NS)
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kubeconfig)))


@pytest.fixture
def custom(core, kubeconfig):
    return kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(str(kubeconfig)))


def refused(call, *args, **kwargs) -> tuple[int, dict]:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        call(*args, **kwargs)
    return caught.value.status, json.loads(caught.value.body)


def test_create_fills_metadata_and_a_second_create_is_already_exists(core):
    created = core.create_namespaced_pod(NS, pod("a"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert int(created.metadata.resource_version) > 0 and created.metadata.generation == 1
    assert created.status.phase == "Pending"

    status, body = refused(core.create_namespaced_pod, NS, pod("a"))
    assert status == 409
    assert body["reason"] == "AlreadyExists" and body["message"] == 'pods "a" already exists'


def test_schema_invalid_pod_is_refused_with_422_naming_the_field(core, fake_kube):
    bad = pod("a")
    bad["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    bad["spec"]["containers"][0]["gpu"] = 1
    status, body = refused(core.create_namespaced_pod, NS, bad)
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('Pod "a" is invalid: ')
    assert 'unknown field "spec.containers[0].gpu"' in body["message"]
    assert fake_kube.get("pods", "a", NS) is None


def test_rayservice_with_an_unknown_field_is_refused(custom, fake_kube):
    status, body = refused(custom.create_namespaced_custom_object, "ray.io", "v1", NS, "rayservices",
                           ray_service("iris", replica=2))
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"] == 'RayService "iris" is invalid: spec.replica: unknown field "spec.replica"'
    assert fake_kube.list("rayservices", NS) == []

    created = custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", ray_service("iris"))
    assert created["metadata"]["namespace"] == NS and "status" not in created


def test_invalid_name_and_label_value_are_refused(core):
    status, body = refused(core.create_namespaced_pod, NS, pod("Alice_Pod"))
    assert status == 422 and "metadata.name: Invalid value: \"Alice_Pod\"" in body["message"]
    status, body = refused(core.create_namespaced_pod, NS, pod("a", labels={"user": "alice@example.com"}))
    assert status == 422 and '"alice@example.com"' in body["message"]


def test_unknown_namespace_is_not_found(core):
    status, body = refused(core.create_namespaced_pod, "nowhere", pod("a"))
    assert status == 404 and body["message"] == 'namespaces "nowhere" not found'


def test_gpu_quota_refuses_with_the_api_servers_message_and_tracks_usage(core, fake_kube):
    fake_kube.seed({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu", "namespace": NS},
                    "spec": {"hard": {"requests.nvidia.com/gpu": "4", "pods": "10"}}})
    core.create_namespaced_pod(NS, pod("one", gpus=3))
    assert fake_kube.get("resourcequotas", "gpu", NS)["status"] == {
        "hard": {"requests.nvidia.com/gpu": "4", "pods": "10"},
        "used": {"requests.nvidia.com/gpu": "3", "pods": "1"}}

    status, body = refused(core.create_namespaced_pod, NS, pod("two", gpus=2))
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('pods "two" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=2, '
                               'used: requests.nvidia.com/gpu=3, limited: requests.nvidia.com/gpu=4')

    core.create_namespaced_pod(NS, pod("cpu-only"))  # no GPU asked: not refused by a GPU-only quota
    fake_kube.patch_status("pods", "one", {"phase": "Succeeded"}, namespace=NS)  # terminated pods do not count
    assert fake_kube.get("resourcequotas", "gpu", NS)["status"]["used"] == {"requests.nvidia.com/gpu": "0", "pods": "1"}
    core.create_namespaced_pod(NS, pod("two", gpus=2))


def test_cpu_quota_requires_requests_and_sums_them(core, fake_kube):
    fake_kube.seed({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": NS},
                    "spec": {"hard": {"requests.cpu": "2", "requests.memory": "4Gi"}}})
    status, body = refused(core.create_namespaced_pod, NS, pod("bare"))
    assert status == 403
    assert body["message"] == ('pods "bare" is forbidden: failed quota: compute: must specify '
                               'requests.cpu for: notebook; requests.memory for: notebook')
    core.create_namespaced_pod(NS, pod("a", cpu="1500m", memory="1Gi"))
    core.create_namespaced_pod(NS, pod("b", cpu="500m", memory="2Gi"))
    assert fake_kube.get("resourcequotas", "compute", NS)["status"]["used"] == {"requests.cpu": "2",
                                                                              "requests.memory": "3Gi"}
    status, body = refused(core.create_namespaced_pod, NS, pod("c", cpu="100m", memory="1Gi"))
    assert "requested: requests.cpu=100m, used: requests.cpu=2, limited: requests.cpu=2" in body["message"]
    core.delete_namespaced_pod("a", NS)
    assert fake_kube.get("resourcequotas", "compute", NS)["status"]["used"]["requests.cpu"] == "500m"


def test_label_and_field_selectors(core, fake_kube):
    fake_kube.namespace("team-nlp")
    core.create_namespaced_pod(NS, pod("a", labels={"app": "jupyterhub", "user": "alice"}))
    core.create_namespaced_pod(NS, pod("b", labels={"app": "jupyterhub", "user": "bob"}))
    core.create_namespaced_pod("team-nlp", pod("c", labels={"app": "ray"}))

    def names(**kwargs):
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kwargs).items)

    assert names() == ["a", "b", "c"]
    assert names(label_selector="app=jupyterhub") == ["a", "b"]
    assert names(label_selector="app=jupyterhub,user!=alice") == ["b"]
    assert names(label_selector="user in (alice,carol)") == ["a"]
    assert names(label_selector="!user") == ["c"]
    assert names(field_selector="metadata.namespace=team-nlp") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert [p.metadata.name for p in core.list_namespaced_pod(NS, label_selector="user").items] == ["a", "b"]
    status, _ = refused(core.list_namespaced_pod, NS, label_selector="user in alice")
    assert status == 400


def test_delete_removes_the_object(core, fake_kube):
    core.create_namespaced_config_map(NS, {"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": "settings"}, "data": {"a": "1"}})
    core.delete_namespaced_config_map("settings", NS)
    assert fake_kube.get("configmaps", "settings", NS) is None
    status, body = refused(core.read_namespaced_config_map, "settings", NS)
    assert status == 404 and body == {**body, "reason": "NotFound", "message": 'configmaps "settings" not found'}
    status, _ = refused(core.delete_namespaced_config_map, "settings", NS)
    assert status == 404

    core.create_namespaced_pod(NS, pod("a"))
    core.delete_namespace(NS)  # at once, with everything in it
    assert fake_kube.get("namespaces", NS) is None and fake_kube.list("pods") == []


def test_patch_kinds_replace_and_optimistic_concurrency(core, custom, fake_kube):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}},
          "data": {"x": "1"}}
    created = core.create_namespaced_config_map(NS, cm)
    core.patch_namespaced_config_map("c", NS, {"metadata": {"labels": {"b": "2"}}, "data": {"x": None, "y": "2"}})
    assert fake_kube.get("configmaps", "c", NS)["data"] == {"y": "2"}
    assert fake_kube.get("configmaps", "c", NS)["metadata"]["labels"] == {"a": "1", "b": "2"}
    core.patch_namespaced_config_map("c", NS, [{"op": "add", "path": "/data/z", "value": "3"},
                                               {"op": "remove", "path": "/metadata/labels/a"}])
    stored = fake_kube.get("configmaps", "c", NS)
    assert stored["data"] == {"y": "2", "z": "3"} and stored["metadata"]["labels"] == {"b": "2"}

    stale = {**cm, "metadata": {**cm["metadata"], "resourceVersion": created.metadata.resource_version}}
    status, body = refused(core.replace_namespaced_config_map, "c", NS, stale)
    assert status == 409 and body["reason"] == "Conflict"
    replaced = core.replace_namespaced_config_map("c", NS, {**cm, "data": {"only": "this"}})
    assert replaced.data == {"only": "this"} and replaced.metadata.uid == created.metadata.uid

    custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", ray_service("iris"))
    patched = custom.patch_namespaced_custom_object("ray.io", "v1", NS, "rayservices", "iris",
                                                    {"spec": {"serveConfigV2": "applications: [x]"}})
    assert patched["metadata"]["generation"] == 2
    status, body = refused(custom.patch_namespaced_custom_object, "ray.io", "v1", NS, "rayservices", "iris",
                           {"spec": {"serveConfig": "typo"}})
    assert status == 422 and "spec.serveConfig" in body["message"]


def test_status_subresource_is_separate_from_the_main_resource(custom, fake_kube):
    custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", ray_service("iris"))
    custom.patch_namespaced_custom_object("ray.io", "v1", NS, "rayservices", "iris",
                                          {"status": {"serviceStatus": "Running"}})
    assert "status" not in fake_kube.get("rayservices", "iris", NS)  # the main resource ignores status

    fake_kube.patch_status("rayservices", "iris", {"serviceStatus": "Running"}, namespace=NS)
    stored = custom.get_namespaced_custom_object_status("ray.io", "v1", NS, "rayservices", "iris")
    assert stored["status"] == {"serviceStatus": "Running"} and stored["metadata"]["generation"] == 1
    with pytest.raises(ApiError) as caught:
        fake_kube.patch_status("rayservices", "iris", {"serviceStatus": 3}, namespace=NS)
    assert caught.value.code == 422 and "status.serviceStatus" in caught.value.message


async def test_watch_streams_events_from_a_resource_version(fake_kube, kubeconfig):
    """kubernetes_asyncio's Watch sends watch=True, as KubeSpawner's reflector does."""
    fake_kube.namespace(NS)
    start = fake_kube.seed({**pod("before"), "metadata": {"name": "before", "namespace": NS}})
    rv = start["metadata"]["resourceVersion"]
    async with await kubernetes_asyncio.config.new_client_from_config(config_file=str(kubeconfig)) as api_client:
        core = kubernetes_asyncio.client.CoreV1Api(api_client)

        async def act():
            await asyncio.sleep(0.1)
            await core.create_namespaced_pod(NS, pod("a", labels={"app": "x"}))
            await core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"step": "2"}}})
            await core.delete_namespaced_pod("a", NS)
            await core.create_namespaced_pod(NS, pod("other"))  # filtered out by the selector

        seen = []
        actor = asyncio.create_task(act())
        watch = kubernetes_asyncio.watch.Watch()
        async with watch.stream(core.list_namespaced_pod, NS, resource_version=rv, label_selector="app=x",
                                timeout_seconds=2) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"].metadata.name, event["object"].metadata.labels))
                if event["type"] == "DELETED":
                    break
        await actor
    assert seen == [("ADDED", "a", {"app": "x"}), ("MODIFIED", "a", {"app": "x", "step": "2"}),
                    ("DELETED", "a", {"app": "x", "step": "2"})]
    assert any(r.verb == "watch" and r.query.get("watch") == "True" for r in fake_kube.requests)


def test_watch_from_zero_lists_first_and_ends_at_its_timeout(core, kubeconfig):
    core.create_namespaced_pod(NS, pod("a"))
    started = time.monotonic()
    events = list(kubernetes.watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "a")]
    assert 0.9 < time.monotonic() - started < 3


def test_kubelet_runs_pods_and_removes_them_after_the_grace_period(core, fake_kube):
    fake_kube.kubelet(max_grace=0.2)
    core.create_namespaced_pod(NS, pod("a"))
    running = _wait(lambda: fake_kube.get("pods", "a", NS)["status"].get("phase") == "Running")
    assert running
    stored = fake_kube.get("pods", "a", NS)
    assert stored["status"]["podIP"] == "127.0.0.1" and stored["spec"]["nodeName"] == "fake-node"
    assert [c["ready"] for c in stored["status"]["containerStatuses"]] == [True]
    assert {e.reason for e in core.list_namespaced_event(NS, field_selector="involvedObject.name=a").items} == {
        "Scheduled", "Started"}

    terminating = core.delete_namespaced_pod("a", NS)
    assert terminating.metadata.deletion_timestamp is not None
    assert _wait(lambda: fake_kube.get("pods", "a", NS) is None)


def test_pod_spec_is_immutable(core):
    core.create_namespaced_pod(NS, pod("a"))
    status, body = refused(core.patch_namespaced_pod, "a", NS, {"spec": {"restartPolicy": "Never"}})
    assert status == 422 and "pod updates may not change fields" in body["message"]


def test_faults_requests_log_and_authentication(core, fake_kube, kubeconfig):
    fake_kube.fail("create", "pods", 500, "etcd is down")
    status, body = refused(core.create_namespaced_pod, NS, pod("a"))
    assert status == 500 and body["message"] == "etcd is down"
    core.create_namespaced_pod(NS, pod("a"))  # the fault was for one request

    fake_kube.clear_requests()
    core.list_namespaced_pod(NS)
    core.read_namespaced_pod("a", NS)
    assert (fake_kube.count(), fake_kube.count("list", "pods"), fake_kube.count("get", "pods")) == (2, 1, 1)

    fake_kube.fail("create", "configmaps", 504, "timeout", after=True)  # carried out, then answered an error
    status, _ = refused(core.create_namespaced_config_map, NS, {"apiVersion": "v1", "kind": "ConfigMap",
                                                                "metadata": {"name": "made"}})
    assert status == 504 and fake_kube.get("configmaps", "made", NS) is not None

    anonymous = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(
        kubernetes.client.Configuration(host=fake_kube.url)))
    status, body = refused(anonymous.list_namespaced_pod, NS)
    assert status == 403 and body["message"] == ('pods is forbidden: User "system:anonymous" cannot list resource '
                                                 f'"pods" in API group "" in the namespace "{NS}"')
    stranger = kubernetes.client.Configuration(host=fake_kube.url, api_key={"authorization": "Bearer nobody"})
    status, _ = refused(kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(stranger)).list_namespaced_pod, NS)
    assert status == 401


async def test_point_kubespawner_at_makes_kubespawners_clients_use_the_fake(fake_kube, kubeconfig):
    from kubespawner.clients import load_config, shared_client

    fake_kube.namespace(NS)
    fake_kube.seed({**pod("a"), "metadata": {"name": "a", "namespace": NS}})
    load_config()
    pods = await shared_client("CoreV1Api").list_namespaced_pod(NS)
    assert [p.metadata.name for p in pods.items] == ["a"]


def test_two_servers_side_by_side_keep_their_own_state():
    with FakeKube() as one, FakeKube() as two:
        one.namespace("only-here")
        assert one.get("namespaces", "only-here") and two.get("namespaces", "only-here") is None


def _wait(condition, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_pod_log_with_tail_and_container(core, fake_kube):
    two = pod("a")
    two["spec"]["containers"].append({"name": "sidecar", "image": "busybox:1"})
    core.create_namespaced_pod(NS, two)
    status, body = refused(core.read_namespaced_pod_log, "a", NS, container="notebook")
    assert status == 400 and body["message"] == 'container "notebook" in pod "a" is waiting to start: ContainerCreating'
    fake_kube.patch_status("pods", "a", {"phase": "Running"}, namespace=NS)
    fake_kube.set_pod_log(NS, "a", "one\ntwo\nthree\n")
    raw = core.read_namespaced_pod_log("a", NS, container="notebook", tail_lines=2, _preload_content=False)
    assert raw.data == b"two\nthree\n"
    status, body = refused(core.read_namespaced_pod_log, "a", NS)
    assert status == 400 and "a container name must be specified" in body["message"]
    status, _ = refused(core.read_namespaced_pod_log, "a", NS, container="nope")
    assert status == 400
