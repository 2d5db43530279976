"""Serving requests are validated field by field; the Serve config and the RayService are whole dicts
that fit Ray Serve's schema and KubeRay's CRD (strict)."""

import jsonschema
import pytest
import yaml

from mlplatform.serving.errors import InvalidServingRequest
from mlplatform.serving.rollout import Rollout
from mlplatform.serving.spec import (SPARE_PREFIX, PodResources, candidate_of, model_args, ray_service,
                                     serve_application, serve_applications, serve_config, serving_request, settled,
                                     spare_application, taken_over, with_candidate, with_rollout,
                                     without_candidate)

from mlplatform_core.catalog import ServingLimits
from mlplatform_core.contract import FORWARDED_TO_SERVING, PlatformEnvironment

from ..support.crd import errors, validate

ARGS = {"model_uri": "models:/iris/3", "model_version": "3", "requested_uri": "models:/iris@champion", "task": None}
USER_CONFIG = {"max_batch_size": 32, "batch_wait_timeout_s": 0.002, "max_tokens_limit": 4096}
LABELS = {"app.kubernetes.io/name": "iris", "app.kubernetes.io/component": "model-serving",
          "app.kubernetes.io/managed-by": "mlplatform"}


def problems(**kwargs) -> dict[str, str]:
    with pytest.raises(InvalidServingRequest) as info:
        serving_request(**{"name": "iris", "model_uri": "models:/iris@champion", **kwargs})
    assert info.value.status_code == 400
    return dict(info.value.problems)


def test_defaults():
    r = serving_request(name="iris", model_uri="models:/iris@champion")
    assert r.to_dict() == {"name": "iris", "model_uri": "models:/iris@champion", "replicas": 1, "min_replicas": None,
                           "max_replicas": None, "cpus": 1.0, "gpus": 0, "max_batch_size": 32,
                           "batch_wait_timeout_s": 0.002, "max_ongoing_requests": None, "task": None,
                           "max_tokens_limit": 4096, "downscale_delay_s": 600}
    assert r.ongoing_requests == 64 and r.model_name == "iris" and not r.autoscaling


@pytest.mark.parametrize("name", ["Iris", "iris_1", "1iris", "iris-", "", "a" * 64, "iris.v2"])
def test_name_must_be_a_dns_label(name):
    message = problems(name=name)["name"]
    assert repr(name) in message and "DNS label" in message and "lowercase" in message


@pytest.mark.parametrize("uri", ["iris", "models:/iris", "models:/iris@", "runs:/abc/model", "models:/iris/v3", 3])
def test_model_uri_must_name_a_registered_model(uri):
    assert "models:/<name>@<alias>" in problems(model_uri=uri)["model_uri"]


def test_every_problem_is_reported_at_once_with_field_value_and_allowed():
    found = problems(name="Bad_Name", replicas=0, cpus=0, gpus=-1, max_batch_size=0, task="chat")
    assert set(found) == {"name", "replicas", "cpus", "gpus", "max_batch_size", "task"}
    assert found["replicas"] == "0 is out of range; allowed: an integer from 1 to 16"
    assert found["cpus"].startswith("0 is out of range; allowed:")
    assert found["gpus"].startswith("-1 is not a GPU count; allowed: 0, a fraction below 1")
    assert found["max_batch_size"] == "0 is out of range; allowed: an integer from 1 to 1024"
    assert found["task"] == "'chat' is not a task; allowed: predict, text-generation or unset (read from the model)"
    with pytest.raises(InvalidServingRequest) as info:
        serving_request(name="Bad_Name", model_uri="models:/iris@champion", replicas=0)
    assert str(info.value).startswith("invalid serving request:\n  - name: 'Bad_Name' is not a DNS label")


@pytest.mark.parametrize("field,value,expected", [
    ("replicas", -1, "-1 is out of range; allowed: an integer from 1 to 16"),
    ("replicas", 1.5, "1.5 is not an integer; allowed: an integer from 1 to 16"),
    ("replicas", True, "True is not an integer; allowed: an integer from 1 to 16"),
    ("replicas", "2", "'2' is not an integer; allowed: an integer from 1 to 16"),
    ("gpus", 1.5, "1.5 is not a GPU count; allowed: 0, a fraction below 1 (shared GPU) or a whole number up to 8"),
    ("cpus", float("nan"), "nan is not a number"),
    ("batch_wait_timeout_s", 2, "2 is out of range; allowed: 0 to 1 second"),
    ("max_ongoing_requests", 8, "8 is less than max_batch_size (32), so batches never fill; allowed: at least 32"),
])
def test_bad_numbers(field, value, expected):
    assert problems(**{field: value})[field] == expected


def test_autoscaling_bounds():
    assert problems(min_replicas=3, max_replicas=2)["min_replicas"] == "3 is more than max_replicas (2); allowed: 0 to 2"
    assert problems(min_replicas=1, max_replicas=0)["max_replicas"] == "0 is out of range; allowed: an integer from 1 to 16"
    assert "either a fixed number of replicas" in problems(replicas=2, min_replicas=1, max_replicas=3)["replicas"]
    r = serving_request(name="iris", model_uri="models:/iris/3", min_replicas=0, max_replicas=4)
    assert (r.autoscaling, r.min_replicas, r.max_replicas, r.most_replicas) == (True, 0, 4, 4)


def test_gpu_quota_counts_gpus_per_replica_times_the_most_replicas():
    assert serving_request(name="iris", model_uri="models:/iris/3", gpus=1, replicas=2, gpu_quota=2).gpus == 1
    message = problems(gpus=1, min_replicas=1, max_replicas=3, gpu_quota=2)["gpus"]
    assert message == ("1 per replica × 3 replica(s) needs 3 GPUs, more than the team's GPU quota of 2; "
                       "allowed: at most 2 GPUs in all")
    assert problems(gpus=0.5, replicas=1, gpu_quota=0)["gpus"].startswith("0.5 per replica × 1 replica(s) needs 1 GPUs")


def test_serve_application_fixed_replicas():
    r = serving_request(name="iris", model_uri="models:/iris@champion", replicas=2, cpus=0.5)
    assert serve_application(r, model_version="3", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:18500"}) == {
        "name": "iris",
        "route_prefix": "/iris",
        "import_path": "mlplatform.serving.app:build",
        "args": ARGS,
        "deployments": [{
            "name": "Model",
            "max_ongoing_requests": 64,
            "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0,
                                  "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": "http://127.0.0.1:18500"}}},
            "user_config": USER_CONFIG,
            "num_replicas": 2,
        }],
    }


def test_serve_application_autoscaling_gpu_text_generation_with_surge():
    r = serving_request(name="llm", model_uri="models:/llm/7", min_replicas=1, max_replicas=3, gpus=1,
                        max_batch_size=8, task="text-generation", max_ongoing_requests=16)
    app = serve_application(r, model_version="7", surge=True)
    assert app["args"] == {"model_uri": "models:/llm/7", "model_version": "7", "requested_uri": "models:/llm/7",
                           "task": "text-generation"}
    assert app["deployments"] == [{
        "name": "Model",
        "max_ongoing_requests": 16,
        "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 1},
        "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.002, "max_tokens_limit": 4096},
        "max_surge_percent": 100,
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 8,
                               "downscale_delay_s": 600},
    }]
    assert "runtime_env" not in app


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic fields
def test_an_idle_autoscaled_model_scales_to_its_minimum_after_the_catalogs_delay():
    """serving.idle_downscale_seconds is Ray Serve's downscale_delay_s, locally and in the RayService."""
    from ray.serve.config import AutoscalingConfig

    r = serving_request(name="iris", model_uri="models:/iris/3", min_replicas=0, max_replicas=4,
                        limits=ServingLimits(idle_downscale_seconds=120))
    assert r.downscale_delay_s == 120
    local = serve_application(r, model_version="3")["deployments"][0]
    on_kubernetes = yaml.safe_load(ray_service(r, namespace="team-vision", model_version="3")["spec"]["serveConfigV2"])
    for deployment in (local, on_kubernetes["applications"][0]["deployments"][0]):
        assert deployment["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 32,
                                                    "downscale_delay_s": 120}
        assert AutoscalingConfig.model_validate(deployment["autoscaling_config"]).downscale_delay_s == 120


def test_fixed_replicas_have_no_downscale_delay():
    r = serving_request(name="iris", model_uri="models:/iris/3", replicas=2, limits=ServingLimits(idle_downscale_seconds=120))
    assert "autoscaling_config" not in serve_application(r, model_version="3")["deployments"][0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic fields
def test_serve_config_is_accepted_by_ray_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    r = serving_request(name="iris", model_uri="models:/iris@champion", min_replicas=1, max_replicas=2)
    config = serve_config([serve_application(r, model_version="3", env={"A": "b"}, surge=True)],
                          http_host="127.0.0.1", http_port=18602)
    assert config["proxy_location"] == "HeadOnly" and config["http_options"] == {"host": "127.0.0.1", "port": 18602}
    parsed = ServeDeploySchema.model_validate(config)
    assert parsed.applications[0].args == ARGS
    assert parsed.applications[0].deployments[0].user_config == USER_CONFIG
    assert parsed.applications[0].deployments[0].max_surge_percent == 100
    assert parsed.applications[0].deployments[0].autoscaling_config["downscale_delay_s"] == 600


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic fields
def test_a_gpu_candidate_has_its_own_devices_and_takes_them_to_the_champion_when_promoted():
    from ray.serve.schema import ServeDeploySchema

    r = serving_request(name="iris", model_uri="models:/iris@champion", gpus=1)
    env = {"CUDA_VISIBLE_DEVICES": "1", "MLFLOW_TRACKING_URI": "http://m"}
    app = with_candidate(serve_application(r, model_version="3", env=env), model_version="4",
                         requested_uri="models:/iris/4", rollout=Rollout(), inference_log={},
                         env={"CUDA_VISIBLE_DEVICES": "2"})
    champion, candidate = app["deployments"]
    # Each deployment carries its whole environment; the application none (Serve builds it in a plain task).
    assert "runtime_env" not in app and champion["ray_actor_options"]["runtime_env"] == {"env_vars": env}
    own = {"CUDA_VISIBLE_DEVICES": "2", "MLFLOW_TRACKING_URI": "http://m"}
    assert candidate["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1, "runtime_env": {"env_vars": own}}
    parsed = ServeDeploySchema.model_validate(serve_config([app]))
    assert parsed.applications[0].deployments[1].ray_actor_options.runtime_env == {"env_vars": own}

    promoted = without_candidate(app, promote=True)
    assert promoted["deployments"][0]["ray_actor_options"]["runtime_env"] == {"env_vars": own}
    assert [d["name"] for d in promoted["deployments"]] == ["Model"] and promoted["args"]["model_version"] == "4"
    aborted = without_candidate(app)  # the champion keeps its own
    assert aborted["deployments"][0]["ray_actor_options"]["runtime_env"] == {"env_vars": env}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic fields
def test_in_a_rollout_the_candidate_is_an_application_of_its_own_behind_the_gateway():
    """The champion at its route without the rollout's settings (the gateway's), the candidate at <route>--candidate
    with its own model, devices and the champion's batching: a change of mode or share changes no application."""
    from ray.serve.schema import ServeDeploySchema

    r = serving_request(name="iris", model_uri="models:/iris@champion", gpus=1)
    env = {"CUDA_VISIBLE_DEVICES": "1", "MLFLOW_TRACKING_URI": "http://m"}
    single = serve_application(r, model_version="3", env=env)
    assert serve_applications(single) == [single]
    tried = with_candidate(single, model_version="4", requested_uri="models:/iris/4", rollout=Rollout(mode="shadow"),
                           inference_log={"sample_rate": 0.5}, env={"CUDA_VISIBLE_DEVICES": "2"})
    champion, candidate = serve_applications(tried)
    assert champion == {**without_candidate(tried), "deployments": champion["deployments"]}
    assert champion["args"] == single["args"] and [d["name"] for d in champion["deployments"]] == ["Model"]
    assert champion["deployments"][0]["user_config"] == USER_CONFIG  # no rollout, no log settings
    assert (candidate["name"], candidate["route_prefix"]) == ("iris--candidate", "/iris--candidate")
    assert candidate["args"] == {"model_uri": "models:/iris/4", "model_version": "4",
                                 "requested_uri": "models:/iris/4", "task": None}
    assert [d["name"] for d in candidate["deployments"]] == ["Model"]
    assert candidate["deployments"][0]["user_config"] == USER_CONFIG
    assert candidate["deployments"][0]["ray_actor_options"]["runtime_env"] == {
        "env_vars": {"CUDA_VISIBLE_DEVICES": "2", "MLFLOW_TRACKING_URI": "http://m"}}
    ServeDeploySchema.model_validate(serve_config([champion, candidate]))
    # Another mode, share or log setting: the same two applications.
    assert serve_applications(with_rollout(tried, Rollout(mode="canary", share=0.2))) == [champion, candidate]


def test_no_endpoint_is_named_as_a_candidates_route():
    with pytest.raises(InvalidServingRequest) as refused:
        serving_request(name="iris--candidate", model_uri="models:/iris@champion")
    assert refused.value.problems == [("name", "'iris--candidate' ends with '--candidate', the route of an endpoint's "
                                               "candidate in a rollout; allowed: any other DNS label")]
    assert serving_request(name="iris--candidates-2", model_uri="models:/iris@champion").name == "iris--candidates-2"


def test_replicas_get_the_contract_without_credentials_or_notebook_paths():
    environ = {"MLFLOW_TRACKING_URI": "http://mlflow", "MLPLATFORM_TEAM": "team-vision", "AWS_REGION": "us-east-1",
               "JUPYTERHUB_API_TOKEN": "secret", "AWS_CONFIG_FILE": "/x", "CUDA_VISIBLE_DEVICES": "0",
               "MLPLATFORM_GPU_COUNT": "1", "MLPLATFORM_S3_PREFIX": "", "HOME": "/home/alice",
               "MLPLATFORM_CATALOG": "/etc/mlplatform/platform.yaml", "MLPLATFORM_CREDENTIALS_URL": "http://hub/x"}
    forwarded = PlatformEnvironment.from_environ(environ, required=()).variables(FORWARDED_TO_SERVING)
    assert forwarded == {"MLPLATFORM_CONTRACT_VERSION": "1", "MLPLATFORM_TEAM": "team-vision",
                         "MLPLATFORM_BACKEND": "local", "MLFLOW_TRACKING_URI": "http://mlflow",
                         "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


def test_ray_service_cpu_fixed_replicas_whole_dict():
    r = serving_request(name="iris", model_uri="models:/iris@champion", replicas=2, cpus=0.5)
    env = {"MLFLOW_TRACKING_URI": "http://mlflow.platform:5000", "MLPLATFORM_TEAM": "team-vision"}
    env_list = [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.platform:5000"},
                {"name": "MLPLATFORM_TEAM", "value": "team-vision"}]
    obj = ray_service(r, namespace="team-vision", model_version="3", env=env)
    serve = yaml.safe_load(obj["spec"].pop("serveConfigV2"))
    assert serve == {"applications": [serve_application(r, model_version="3", surge=True)]}
    assert obj == {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "iris", "namespace": "team-vision", "labels": LABELS,
                     "annotations": {"mlplatform.io/model-uri": "models:/iris@champion",
                                     "mlplatform.io/model-version": "3"}},
        "spec": {
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"idleTimeoutSeconds": 60},
                "authOptions": {"mode": "token"},
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {"metadata": {"labels": LABELS}, "spec": {"containers": [{
                        "name": "ray-head", "image": "mlplatform/ray:0.1.0", "env": env_list,
                        "ports": [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                                  {"name": "serve", "containerPort": 8000}],
                        "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"cpu": "1", "memory": "2Gi"}}}]}},
                },
                "workerGroupSpecs": [{
                    "groupName": "replicas", "replicas": 2, "minReplicas": 2, "maxReplicas": 4,
                    "rayStartParams": {"num-cpus": "1"},
                    "template": {"metadata": {"labels": LABELS}, "spec": {"containers": [{
                        "name": "ray-worker", "image": "mlplatform/ray:0.1.0", "env": env_list,
                        "resources": {"requests": {"cpu": "500m", "memory": "4Gi"},
                                      "limits": {"cpu": "500m", "memory": "4Gi"}}}]}},
                }],
            },
        },
    }
    obj["spec"]["serveConfigV2"] = yaml.safe_dump(serve)
    validate(obj)


def test_ray_service_gpu_autoscaling():
    r = serving_request(name="llm", model_uri="models:/llm@champion", min_replicas=1, max_replicas=3, gpus=2, cpus=4)
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    obj = ray_service(r, namespace="team-nlp", model_version="7", node_selector={"nvidia.com/gpu.product": "A100"},
                      tolerations=[toleration], service_account="serving", resources=PodResources(worker_memory="32Gi"))
    validate(obj)
    cluster = obj["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    group = cluster["workerGroupSpecs"][0]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (1, 1, 6)
    pod = group["template"]["spec"]
    assert pod["containers"][0]["image"] == "mlplatform/ray-gpu:0.1.0"
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "4", "memory": "32Gi"},
                                                 "limits": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "2"}}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"} and pod["tolerations"] == [toleration]
    assert pod["serviceAccountName"] == cluster["headGroupSpec"]["template"]["spec"]["serviceAccountName"] == "serving"
    # The head asks for no GPU and gets no GPU node selector.
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "nodeSelector" not in head and "nvidia.com/gpu" not in head["containers"][0]["resources"]["limits"]
    deployment = yaml.safe_load(obj["spec"]["serveConfigV2"])["applications"][0]["deployments"][0]
    assert deployment["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 2}
    assert deployment["autoscaling_config"]["max_replicas"] == 3


def test_ray_token_authentication_is_on_and_the_token_never_in_the_spec():
    """The dashboard (job submission) and GCS of a team's Ray cluster ask for Ray's token: KubeRay
    generates it into a Secret of the cluster and injects it into the Ray containers (authOptions,
    KubeRay 1.5.1+), so no token is in the RayService, which every teammate can read."""
    r = serving_request(name="iris", model_uri="models:/iris/1", gpus=1)
    obj = ray_service(r, namespace="team-vision", model_version="1", env={"MLPLATFORM_TEAM": "team-vision"})
    validate(obj)  # authOptions is part of KubeRay 1.7's CRD (strict)
    cluster = obj["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}  # no secretName: one Secret per cluster, made by KubeRay
    for template in [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]:
        for container in template["spec"]["containers"]:
            assert not [e for e in container["env"] if e["name"].startswith("RAY_AUTH")]


def test_cpu_only_service_has_no_gpu_request_or_gpu_scheduling():
    r = serving_request(name="iris", model_uri="models:/iris/1")
    obj = ray_service(r, namespace="team-vision", model_version="1", node_selector={"gpu": "a100"},
                      tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    pod = obj["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_an_invalid_ray_service_is_rejected():
    obj = ray_service(serving_request(name="iris", model_uri="models:/iris/1"), namespace="team-vision",
                      model_version="1")
    obj["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "2"  # a string
    obj["spec"]["rayClusterConfig"]["headGroupSpec"]["gpus"] = 1  # no such field
    with pytest.raises(jsonschema.ValidationError):
        validate(obj)
    assert sorted(errors(obj)) == [
        "spec.rayClusterConfig.headGroupSpec: Additional properties are not allowed ('gpus' was unexpected)",
        "spec.rayClusterConfig.workerGroupSpecs.0.replicas: '2' is not of type 'integer'",
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic fields
def test_a_deploy_on_the_warm_spare_changes_nothing_that_makes_serve_build_or_restart():
    """Serve's own rules (Ray 2.60): the same code version (import path, args, runtime_env) means no app build
    task; the same actor options mean no new replica; the route prefix and the user_config reconfigure it."""
    from ray.serve._private.deploy_utils import get_app_code_version
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    spare = spare_application(f"{SPARE_PREFIX}0a1b2c3d")
    assert spare["name"] == spare["route_prefix"][1:] and not spare["name"].replace("-", "").isalnum()
    r = serving_request(name="iris", model_uri="models:/iris@champion", replicas=2, max_batch_size=8)
    env = {"MLFLOW_TRACKING_URI": "http://m", "MLPLATFORM_SERVING_SECRETS_FILE": "/r/apps/iris.secrets"}
    app = taken_over(spare, r, model_version="3", env=env)
    assert app["name"] == spare["name"] and app["route_prefix"] == "/iris"
    schemas = [ServeApplicationSchema.model_validate(a) for a in (spare, app)]
    assert get_app_code_version(schemas[0]) == get_app_code_version(schemas[1])
    deployment = app["deployments"][0]
    assert deployment["ray_actor_options"] == spare["deployments"][0]["ray_actor_options"]  # no runtime_env
    assert deployment["num_replicas"] == 2 and deployment["user_config"] == {
        "max_batch_size": 8, "batch_wait_timeout_s": 0.002, "max_tokens_limit": 4096, "model": ARGS, "env": env}
    assert model_args(app) == ARGS and candidate_of(app) is None
    ServeDeploySchema.model_validate(serve_config([spare_application(f"{SPARE_PREFIX}ffff0000"), app]))
    # What a spare is not used for: other CPUs or GPUs per replica are another actor; autoscaling.
    for other in ({"cpus": 2}, {"gpus": 1}, {"cpus": 0.5}, {"min_replicas": 1, "max_replicas": 2}):
        assert taken_over(spare, serving_request(name="iris", model_uri="models:/iris/3", **other), model_version="3",
                          env=env) is None


def test_a_taken_over_spare_goes_back_to_the_usual_form_for_a_new_version_or_a_rollout():
    spare = spare_application(f"{SPARE_PREFIX}0a1b2c3d")
    r = serving_request(name="iris", model_uri="models:/iris@champion")
    env = {"MLFLOW_TRACKING_URI": "http://m"}
    app = taken_over(spare, r, model_version="3", env=env)
    usual = serve_application(r, model_version="3", env=env)
    assert settled(app) == {**usual, "name": spare["name"]}
    assert settled(usual) == usual
    tried = with_candidate(app, model_version="4", requested_uri="models:/iris/4", rollout=Rollout(), inference_log={})
    assert tried["name"] == spare["name"] and tried["args"]["model_uri"] == "models:/iris/3"
    assert candidate_of(tried)["model_version"] == "4" and "model" not in tried["deployments"][0]["user_config"]
    assert without_candidate(tried)["args"] == ARGS
