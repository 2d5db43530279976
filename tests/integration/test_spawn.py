"""Spawning through the real hub: GPU profiles, the environment contract, quota refusals, races."""

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import yaml
from traitlets.config import Config

from hub_config.catalog import DEFAULT_CATALOG
from hub_config.spawners.local import LocalPlatformSpawner

from ..support.hub_user import Group, User
from ..support.mlflow_access import admin_api
from ..support.processes import server_process


def test_gpu_profile_from_the_form_gets_devices_and_the_environment_contract(hub, platform):
    alice = hub.login("alice")
    r = alice.submit_spawn_form({"profile": "team-vision/gpu-a100", "gpu--team-vision--gpu-a100": "a100:2"})
    assert r.status_code == 302 and "/hub/spawn-pending/alice" in r.headers["location"]
    alice.wait_ready()
    assert alice.model()["servers"][""]["user_options"] == {
        "team": "team-vision", "profile": "gpu-a100", "gpu_type": "a100", "gpu_count": 2}

    _, env, cwd = server_process("alice")
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    contract = {k: v for k, v in env.items() if k.startswith("MLPLATFORM_") and k != "MLPLATFORM_CONTRACT_VERSION"}
    assert contract == {
        "MLPLATFORM_USER": "alice",
        "MLPLATFORM_TEAM": "team-vision",
        "MLPLATFORM_NAMESPACE": "team-vision",
        "MLPLATFORM_BACKEND": "local",
        "MLPLATFORM_CATALOG": str(DEFAULT_CATALOG),
        "MLPLATFORM_RAY_PORT": str(platform.ports.ray),
        "MLPLATFORM_RAY_DIR": str(platform.ray_dir),
        "MLPLATFORM_PROFILE": "gpu-a100",
        "MLPLATFORM_GPU_TYPE": "a100",
        "MLPLATFORM_GPU_COUNT": "2",
        "MLPLATFORM_S3_ENDPOINT": platform.s3_url,
        "MLPLATFORM_S3_BUCKET": "platform",
        "MLPLATFORM_S3_PREFIX": "users/alice/",
        "MLPLATFORM_S3_TEAM_PREFIX": "teams/team-vision/",
        "MLPLATFORM_CREDENTIALS_URL": f"http://127.0.0.1:{platform.ports.hub_api}/hub/api/mlplatform/s3-credentials/alice",
        "MLPLATFORM_SERVICE_URL": f"http://127.0.0.1:{platform.ports.service}/services/mlplatform",
        "MLPLATFORM_MLFLOW_TOKEN_URL": f"http://127.0.0.1:{platform.ports.hub_api}/hub/api/mlplatform/mlflow-token/alice",
    }
    assert env["MLFLOW_TRACKING_URI"] == platform.mlflow_url
    assert (env["MLFLOW_TRACKING_AUTH"], env["MLFLOW_WORKSPACE"]) == ("mlplatform", "team-vision")
    # The local servers' AWS config names the venv's credential process by absolute path (spawners/local_tools.py).
    assert env["AWS_CONFIG_FILE"] == str(platform.data_dir / "aws_config") and "AWS_ACCESS_KEY_ID" not in env
    assert (env["MEM_LIMIT"], env["CPU_LIMIT"]) == (str(32 * 2**30), "8.0")
    assert cwd == platform.data_dir / "home" / "alice" and env["HOME"] == str(cwd)

    # JupyterLab asks nothing about Jupyter news and checks for no update (the package's settings overrides).
    # (JupyterLab applies overrides to the schema's defaults, from which the browser composes the settings.)
    lab = alice.http.get(f"{alice.hub_url}/user/alice/lab")  # the server's OAuth with the hub
    assert lab.status_code == 200
    # Nor does each page load check whether JupyterLab needs a rebuild (that ran node and yarn on the server).
    page_config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                       lab.text, re.S).group(1))
    assert (page_config["buildCheck"], page_config["buildAvailable"]) == (False, False)
    answer = alice.http.get(f"{alice.hub_url}/user/alice/lab/api/settings/"
                            "@jupyterlab/apputils-extension:notification")
    assert answer.status_code == 200, (answer.status_code, answer.text[:300])
    schema = answer.json()["schema"]["properties"]
    assert (schema["fetchNews"]["default"], schema["checkForUpdates"]["default"]) == ("false", False)

    # Everyone in the team now sees two A100 fewer, and the choice that no longer fits is disabled.
    form = hub.login("dana").spawn_page().text
    assert '<option value="a100:2">A100 ×2 — 2 of 4 team-vision A100 free</option>' in form
    assert '<option value="a100:4" disabled>A100 ×4 — only 2 of 4 team-vision A100 free</option>' in form

    alice.stop()
    form = hub.sessions[-1].spawn_page().text
    assert '<option value="a100:4">A100 ×4 — 4 of 4 team-vision A100 free</option>' in form


def test_spawn_beyond_free_quota_is_refused_and_starts_nothing(hub):
    dana = hub.login("dana")
    assert dana.start(team="team-vision", profile="gpu-t4", gpu_type="t4", gpu_count=2).status_code in (201, 202)
    dana.wait_ready()
    alice = hub.login("alice")
    r = alice.start(profile="gpu-a100", gpu_count=4)
    assert r.status_code == 409
    assert r.json()["message"] == ("cannot start with 4 A100 GPUs: only 2 of 4 team-vision GPUs free in total; "
                                   "counts you can take now: 1, 2")
    assert alice.model()["servers"] == {}

    # The form says the same on the spawn page, with the same status.
    page = alice.submit_spawn_form({"profile": "team-vision/gpu-a100", "gpu--team-vision--gpu-a100": "a100:4"})
    assert page.status_code == 409
    assert "cannot start with 4 A100 GPUs: only 2 of 4 team-vision GPUs free in total" in page.text
    assert alice.model()["servers"] == {}


def test_profile_outside_the_users_teams_is_refused(hub):
    bob = hub.login("bob")
    r = bob.start(team="team-vision", profile="gpu-a100")
    assert (r.status_code, r.json()["message"]) == (403, "team 'team-vision' is not one of your teams; allowed: team-nlp")
    r = bob.start(profile="gpu-a100", gpu_count=3)
    assert (r.status_code, r.json()["message"]) == (400, "gpu_count 3 is not offered by profile 'gpu-a100'; "
                                                         "allowed: 1, 2, 4")
    r = bob.start(profile="gpu-a100", gpu_count=2)
    assert (r.status_code, r.json()["message"]) == (409, "cannot start with 2 A100 GPUs: only 1 of 1 team-nlp A100 "
                                                         "free; counts you can take now: 1")
    assert bob.model()["servers"] == {}


def test_two_users_racing_for_the_last_gpu(hub):
    # team-nlp has one A100: bob and the admin (both in team-nlp) ask for it at the same moment.
    racers = [hub.login("bob"), hub.login("admin")]
    with ThreadPoolExecutor(len(racers)) as pool:
        answers = list(pool.map(lambda s: s.start(team="team-nlp", profile="gpu-a100", gpu_count=1), racers))
    statuses = sorted(r.status_code for r in answers)
    assert statuses[0] in (201, 202) and statuses[1] == 409
    loser = racers[[r.status_code for r in answers].index(409)]
    winner = racers[1 - racers.index(loser)]
    assert "only 0 of 1 team-nlp A100 free" in answers[racers.index(loser)].json()["message"]
    winner.wait_ready()
    assert loser.model()["servers"] == {}
    assert server_process(winner.name)[1]["CUDA_VISIBLE_DEVICES"] == "0"


def experiment(platform, name: str) -> dict | None:
    """The team experiment `name`, in the team's workspace, as the platform identity sees it."""
    found = admin_api(platform, name).get(f"{platform.mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
                                          params={"experiment_name": name})
    if found.status_code == 404:
        return None
    found.raise_for_status()
    return {k: found.json()["experiment"][k] for k in ("name", "artifact_location")}


async def test_the_team_experiment_exists_before_the_configured_pre_spawn_hook_and_start(platform, tmp_path):
    # A team MLflow has never seen (the session's other tests create the catalog's teams' experiments).
    team = f"team-{uuid.uuid4().hex[:8]}"
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["teams"][team] = {"group": team, "namespace": team}
    data["profiles"]["cpu"]["teams"].append(team)
    catalog = tmp_path / "platform.yaml"
    catalog.write_text(yaml.safe_dump(data))
    assert experiment(platform, team) is None

    seen = []

    async def hook(spawner):  # a deployment's c.Spawner.pre_spawn_hook (it may be a coroutine)
        seen.append(experiment(platform, team))

    # The hub's config: the key it signs the platform identity's MLflow tokens with.
    config = Config({"MlflowAccess": {"signing_key_file": str(platform.mlflow_signing_key())}})
    alice = LocalPlatformSpawner(user=User("alice", [Group(team)]), catalog_file=str(catalog), pre_spawn_hook=hook,
                                 config=config)
    await alice._run_apply_user_options({"team": team, "profile": "cpu"})
    await alice.run_pre_spawn_hook()  # JupyterHub's User.spawn calls it after the options, before start()
    # In the team's workspace, whose artifact root is the team's prefix (MLflow adds the experiment's id).
    assert len(seen) == 1 and seen[0]["name"] == team
    assert re.fullmatch(rf"s3://platform/teams/{team}/mlflow/\d+", seen[0]["artifact_location"])
