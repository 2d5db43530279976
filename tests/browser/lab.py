"""Steps shared by the browser tests: the SSO login, and running code in a new notebook."""

from __future__ import annotations

import json
import re

from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import expect

from ..support.hub import PASSWORDS

SPAWN_TIMEOUT = 120_000  # ms: a notebook server on 2 shared cores


async def sso_login(page, user: str, shot=None) -> None:
    """Hub login page → (auto_login) the provider's form → back to the hub."""
    await page.goto("/hub/login")
    await page.wait_for_selector("#kc-form-login input[name=username]")
    if shot:
        await shot("provider_login_form")
    await page.fill("#kc-form-login input[name=username]", user)
    await page.fill("#kc-form-login input[name=password]", PASSWORDS[user])
    await page.click("#kc-login")
    # Leaving the provider: the hub's callback answers with the spawn page or an error page.
    await page.wait_for_url(re.compile(r"/hub/"))
    await page.wait_for_load_state()


async def spawn(page, profile: str) -> None:
    """On the spawn page: choose `profile` (its form id, e.g. "team-vision--cpu"), start, wait for JupyterLab."""
    await page.wait_for_selector("#spawn_form input[name=profile]")
    await page.click(f"label[for=profile-item-{profile}]")
    await page.click("#spawn_form button[type=submit]")
    await page.wait_for_url(re.compile(r"/user/[^/]+/lab"), timeout=SPAWN_TIMEOUT)
    # The user's workspace, saved by an earlier test, would reopen its notebooks instead of the launcher.
    await page.goto(page.url.split("?")[0] + "?reset")
    await page.wait_for_selector(".jp-LauncherCard", timeout=SPAWN_TIMEOUT)


async def wait_for_kernel(page) -> None:
    """Until the status bar says the notebook's kernel is idle. JupyterLab sometimes stays at "Connecting"
    although the server connected the kernel's websocket (seen on 2 loaded cores: keystrokes then go
    nowhere); a reload connects it, as it would for a user."""
    idle = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$"))
    try:
        await idle.first.wait_for(timeout=60_000)
    except PlaywrightTimeout:
        await page.reload()
        await page.wait_for_selector(".jp-NotebookPanel .jp-Cell .cm-content", timeout=SPAWN_TIMEOUT)
        await idle.first.wait_for(timeout=SPAWN_TIMEOUT)


async def run_in_new_notebook(page, code: str) -> str:
    """Open a notebook from the launcher, run `code` in its first cell, return the cell's output text."""
    # Type only once the kernel is idle, or the keystrokes race the kernel start.
    await page.click(".jp-LauncherCard[data-category='Notebook']")
    await page.wait_for_selector(".jp-NotebookPanel .jp-Cell .cm-content")
    await wait_for_kernel(page)
    await page.click(".jp-NotebookPanel .jp-Cell .cm-content")
    await page.keyboard.insert_text(code)  # not type(): CodeMirror would auto-indent and close brackets
    await page.wait_for_timeout(500)  # CodeMirror syncs the editor to the model asynchronously
    await page.keyboard.press("Shift+Enter")
    cell = page.locator(".jp-NotebookPanel .jp-Cell").first
    # "[1]" once it has run (ok or not); importing mlflow or boto3 takes a while on 2 cores.
    await expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[1\]"), timeout=SPAWN_TIMEOUT)
    return "\n".join(await cell.locator(".jp-OutputArea-output").all_inner_texts())


async def run_in_new_terminal(page, command: str) -> None:
    """Open a terminal from the launcher and type `command` into its shell. The terminal draws on a canvas; its
    screen-reader mode (a JupyterLab setting, turned on here) also writes the rows as text: `terminal_text`."""
    base = page.url.split("?")[0].split("/lab")[0]
    await screen_reader_terminals(page, base)
    await page.goto(base + "/lab?reset")  # the launcher (not the open notebook), with the setting loaded
    await page.wait_for_selector(".jp-LauncherCard[data-category='Other']", timeout=SPAWN_TIMEOUT)
    await page.click(".jp-LauncherCard[data-category='Other'][title*='terminal']")
    await page.wait_for_selector(".jp-Terminal .xterm-helper-textarea", state="attached", timeout=60_000)
    await page.wait_for_timeout(2000)  # the shell's prompt
    await type_in_terminal(page, command)


async def type_in_terminal(page, command: str) -> None:
    await page.click(".jp-Terminal")
    await page.keyboard.type(command)
    await page.keyboard.press("Enter")


def terminal_text(page):
    """The open terminal's visible rows as text (a locator: `expect(...).to_contain_text(...)`)."""
    return page.locator(".jp-Terminal .xterm-accessibility-tree")


async def screen_reader_terminals(page, server_url: str) -> None:
    """The user's JupyterLab setting `screenReaderMode` of terminals, through the server's settings API."""
    xsrf = next(c["value"] for c in await page.context.cookies(server_url + "/") if c["name"] == "_xsrf")
    answer = await page.request.put(f"{server_url}/lab/api/settings/@jupyterlab/terminal-extension:plugin",
                                    data=json.dumps({"raw": json.dumps({"screenReaderMode": True})}),
                                    headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"})
    assert answer.status == 204, (answer.status, await answer.text())
