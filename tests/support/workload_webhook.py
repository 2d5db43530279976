"""The platform service's admission webhook (mlplatform_service.webhook), run for a fake API server as the hub
pod runs it: its HTTPS listener with the certificate it makes, its Kubernetes client with the hub's service
account (so it puts its CA into the rendered ValidatingWebhookConfiguration under the rendered RBAC), its
stores on a SQLite database. The fake reaches it where the hub Service would (`route_service`).

    with workload_webhook(fake, CATALOG, database_url, tmp_path) as stores:
        ...  # RayService and SparkApplication writes in team namespaces now go through it
        stores.audit.query(action="deploy")
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

from mlplatform_core.catalog import Catalog
from mlplatform_service.audit_log import AuditLog
from mlplatform_service.budgets import Budgets
from mlplatform_service.database import connect
from mlplatform_service.overrides import Overrides
from mlplatform_service.usage import UsageLedger
from mlplatform_service.webhook import start_webhook
from mlplatform_service.workloads import WorkloadAdmission

from hub_config.render.common import HUB_SERVICE, HUB_SERVICE_ACCOUNT
from hub_config.render.workload_webhook import WEBHOOK_CONFIGURATION, WEBHOOK_PORT, webhook_hosts

from .fake_kube import FakeKube


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def workload_webhook(fake: FakeKube, catalog: Catalog, database_url: str, tmp_path: Path) -> Iterator[SimpleNamespace]:
    sessions = connect(database_url)
    ledger = UsageLedger(sessions, lambda: catalog)
    port = _free_port()
    stores = SimpleNamespace(audit=AuditLog(sessions), ledger=ledger, budgets=Budgets(ledger),
                             overrides=Overrides(sessions), url=f"https://127.0.0.1:{port}")
    admission = WorkloadAdmission(lambda: catalog, stores.audit, stores.budgets, stores.overrides)
    hub = catalog.kubernetes.hub_namespace
    kubeconfig = fake.write_kubeconfig(tmp_path / "hub-kubeconfig", namespace=hub,
                                       token=fake.token_for(service_account=f"{hub}/{HUB_SERVICE_ACCOUNT}"))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    handles = {}

    def run():
        asyncio.set_event_loop(loop)

        async def start():
            handles["server"], handles["task"] = start_webhook(
                admission, bind=f"127.0.0.1:{port}", hosts=webhook_hosts(catalog),
                configuration=WEBHOOK_CONFIGURATION, kubeconfig=str(kubeconfig))
            started.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name="workload-webhook", daemon=True)
    thread.start()
    assert started.wait(10), "the webhook did not start"
    fake.route_service(hub, HUB_SERVICE, WEBHOOK_PORT, ("127.0.0.1", port))
    deadline = time.monotonic() + 10  # the service puts its CA in at start, as in the hub pod
    while not all(h.get("clientConfig", {}).get("caBundle")
                  for h in (fake.get("validatingwebhookconfigurations", WEBHOOK_CONFIGURATION) or {"webhooks": [{}]})
                  ["webhooks"]):
        assert time.monotonic() < deadline, "the service did not put its CA into the webhook configuration"
        time.sleep(0.05)
    try:
        yield stores
    finally:
        async def stop():
            handles["task"].cancel()
            await asyncio.gather(handles["task"], return_exceptions=True)
            handles["server"].stop()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        sessions.kw["bind"].dispose()
