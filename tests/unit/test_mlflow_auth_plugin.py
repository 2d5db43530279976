"""MLflow's `mlplatform` auth plugin: one hub call per token lifetime, renewed before expiry, a fresh
token once on a 401, and the hub's refusal in the error. The hub here is a small HTTP server that
answers like the real endpoint (tests/integration/test_mlflow_access.py uses the real one)."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
import requests

from mlplatform.mlflow_auth import HubBearerAuth, HubTokenAuthProvider, HubTokenCache, MlflowTokenUnavailable

from ..support.json_handler import JsonHandler


class Hub(JsonHandler):
    lifetime = 2.0
    refuse = False
    issued: list[str] = []
    valid_from = 0  # MLflow accepts tokens issued from this one on (earlier ones: "revoked")

    def do_GET(self):
        if self.path.startswith("/mlflow"):
            good = {f"Bearer {token}" for token in self.issued[self.valid_from:]}
            return self.answer(200 if self.headers.get("Authorization") in good else 401, {})
        if self.headers.get("Authorization") != "token server-token" or self.refuse:
            return self.answer(403, {"message": "alice is no longer a member of team team-vision"})
        token = f"token-{len(self.issued)}"
        self.issued.append(token)
        self.answer(200, {"token": token, "expires_at": time.time() + self.lifetime})


@pytest.fixture
def hub():
    Hub.issued, Hub.refuse, Hub.lifetime, Hub.valid_from = [], False, 2.0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def environ(hub: str) -> dict[str, str]:
    return {"MLPLATFORM_MLFLOW_TOKEN_URL": f"{hub}/hub/api/mlplatform/mlflow-token/alice",
            "JUPYTERHUB_API_TOKEN": "server-token"}


def test_one_hub_call_per_lifetime_renewed_before_expiry(hub):
    cache = HubTokenCache(environ(hub))
    assert {cache.token() for _ in range(20)} == {"token-0"}  # renews at half of a 2 s lifetime
    time.sleep(1.1)
    assert cache.token() == "token-1" and len(Hub.issued) == 2


def test_a_401_gets_one_fresh_token_and_one_retry(hub):
    Hub.lifetime = 3600
    auth = HubBearerAuth(HubTokenCache(environ(hub)))
    assert requests.get(f"{hub}/mlflow/x", auth=auth, timeout=10).status_code == 200
    Hub.valid_from = 1  # token-0 is no longer accepted, though not expired
    response = requests.get(f"{hub}/mlflow/x", auth=auth, timeout=10)
    assert response.status_code == 200 and len(response.history) == 1 and Hub.issued == ["token-0", "token-1"]
    Hub.valid_from = 99  # nothing is accepted: one retry, then the 401
    response = requests.get(f"{hub}/mlflow/x", auth=auth, timeout=10)
    assert response.status_code == 401 and len(response.history) == 1 and len(Hub.issued) == 3


def test_the_hubs_refusal_is_the_error(hub):
    Hub.refuse = True
    with pytest.raises(MlflowTokenUnavailable) as e:
        HubTokenCache(environ(hub)).token()
    assert str(e.value) == ("the hub refused an MLflow token (403): alice is no longer a member of team "
                            "team-vision")


def test_outside_a_hub_server_the_error_names_what_is_missing():
    with pytest.raises(MlflowTokenUnavailable) as e:
        HubTokenCache({}).token()
    assert "MLPLATFORM_MLFLOW_TOKEN_URL and JUPYTERHUB_API_TOKEN" in str(e.value)


def test_the_plugin_is_mlflows_request_auth_provider_named_mlplatform():
    from mlflow.tracking.request_auth.registry import fetch_auth

    assert HubTokenAuthProvider().get_name() == "mlplatform"
    assert isinstance(fetch_auth("mlplatform"), HubBearerAuth)


def projected(path, exp: float) -> None:
    """A JWT-shaped token as the kubelet writes it (only its `exp` is read here; MLflow verifies it)."""
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp, "sub": "system:serviceaccount:t:s"}).encode())
    path.write_text(f"e30.{payload.decode().rstrip('=')}.sig\n")


def test_a_pod_reads_its_projected_token_again_as_it_nears_expiry(tmp_path):
    token = tmp_path / "token"
    projected(token, time.time() + 2)
    cache = HubTokenCache({"MLPLATFORM_MLFLOW_TOKEN_FILE": str(token)})
    first = cache.token()
    assert first.startswith("e30.") and cache.token() == first
    projected(token, time.time() + 3600)  # the kubelet renewed it
    time.sleep(1.1)  # past half of the first one's lifetime
    assert cache.token() != first


def test_a_missing_projected_token_is_a_clear_error(tmp_path):
    with pytest.raises(MlflowTokenUnavailable) as e:
        HubTokenCache({"MLPLATFORM_MLFLOW_TOKEN_FILE": str(tmp_path / "nothing")}).token()
    assert str(e.value).startswith(f"no MLflow token in {tmp_path / 'nothing'} (FileNotFoundError)")
