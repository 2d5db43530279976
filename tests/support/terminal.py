"""A JupyterLab terminal of a user's server, opened as JupyterLab opens one: jupyter_server's REST API
(POST /api/terminals) and the terminal's websocket (terminado's JSON messages: ["stdin", text] in,
["stdout", text] out)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>])")


class Terminal:
    def __init__(self, hub_url: str, user: str, token: str):
        self.server_url = f"{hub_url}/user/{user}"
        self.headers = {"Authorization": f"token {token}"}
        self.name: str | None = None
        self.socket = None

    async def __aenter__(self) -> Terminal:
        created = requests.post(f"{self.server_url}/api/terminals", headers=self.headers, timeout=60)
        assert created.status_code == 200, (created.status_code, created.text[:300])
        self.name = created.json()["name"]
        url = f"{self.server_url.replace('http', 'ws', 1)}/terminals/websocket/{self.name}"
        self.socket = await websocket_connect(HTTPRequest(url, headers=self.headers))
        # Wide, so that the shell wraps no command line it echoes.
        await self.socket.write_message(json.dumps(["set_size", 50, 400, 0, 0]))
        return self

    async def __aexit__(self, *exc) -> None:
        self.socket.close()
        requests.delete(f"{self.server_url}/api/terminals/{self.name}", headers=self.headers, timeout=60)

    async def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        """Type `command` and Enter; its exit status and what the terminal showed until then (ANSI codes dropped).
        The status is echoed after a marker the typed line does not contain expanded (`$?`, not digits)."""
        marker = f"done-{uuid.uuid4().hex[:8]}"
        await self.socket.write_message(json.dumps(["stdin", f'{command}; echo "{marker}:$?"\r']))
        shown = ""
        done = re.compile(rf"{marker}:(\d+)")
        async with asyncio.timeout(timeout):
            while not (found := done.search(shown)):
                message = await self.socket.read_message()
                assert message is not None, f"the terminal closed; it showed:\n{shown}"
                kind, *content = json.loads(message)
                if kind == "stdout":
                    shown = ANSI.sub("", shown + content[0])
        return int(found.group(1)), shown[:found.start()]
