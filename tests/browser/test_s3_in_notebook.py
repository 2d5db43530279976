"""S3 from a notebook cell with nothing configured: brokered credentials work on the user's prefix and
the S3 server answers AccessDenied on another user's prefix; the AWS CLI in a JupyterLab terminal works
as the notebook does (a login shell used to reset PATH: `aws: command not found`), and shows its output."""

from __future__ import annotations

import json
import re
import time

import boto3
import pytest

from playwright.async_api import expect

from .lab import SPAWN_TIMEOUT, run_in_new_notebook, run_in_new_terminal, sso_login, terminal_text, type_in_terminal

pytestmark = pytest.mark.browser

CELL = (
    "import boto3, os\n"
    's3 = boto3.client("s3")\n'
    'bucket, mine = os.environ["MLPLATFORM_S3_BUCKET"], os.environ["MLPLATFORM_S3_PREFIX"]\n'
    's3.put_object(Bucket=bucket, Key=mine + "hello.txt", Body=b"written from a notebook")\n'
    'print("READ<" + s3.get_object(Bucket=bucket, Key=mine + "hello.txt")["Body"].read().decode() + ">")\n'
    's3.put_object(Bucket=bucket, Key="users/alice/from-bob.txt", Body=b"not allowed")\n'
)


async def test_notebook_reads_and_writes_its_prefix_and_is_denied_elsewhere(page, shot, platform, hub):
    hub.login("bob")  # so the `hub` fixture stops bob's server at teardown
    await sso_login(page, "bob")
    await page.wait_for_selector("#spawn_form input[name=profile]")
    await page.click("label[for=profile-item-team-nlp--cpu]")
    await page.click("#spawn_form button[type=submit]")
    await page.wait_for_selector(".jp-LauncherCard", timeout=SPAWN_TIMEOUT)

    output = await run_in_new_notebook(page, CELL)
    await shot("s3_cell_output")
    assert "READ<written from a notebook>" in output
    assert re.search(r"AccessDenied", output) and "PutObject operation" in output, output

    # The object is really in the S3 server, and nothing was written on alice's prefix.
    keys = json.loads((platform.data_dir / "secrets.json").read_text())
    admin = boto3.client("s3", endpoint_url=platform.s3_url, region_name="us-east-1",
                         aws_access_key_id=keys["s3_access_key"], aws_secret_access_key=keys["s3_secret_key"])
    body = admin.get_object(Bucket="platform", Key="users/bob/hello.txt")["Body"].read()
    assert body == b"written from a notebook"
    assert admin.list_objects_v2(Bucket="platform", Prefix="users/alice/from-bob")["KeyCount"] == 0

    # The terminal: the AWS CLI with the same brokered credentials, on bob's prefix.
    await run_in_new_terminal(page, "echo from-a-terminal | aws s3 cp - s3://platform/users/bob/terminal.txt")
    deadline = time.monotonic() + 90
    while admin.list_objects_v2(Bucket="platform", Prefix="users/bob/terminal.txt")["KeyCount"] == 0:
        if time.monotonic() > deadline:
            await shot("terminal_aws_cli")
            raise AssertionError("the AWS CLI in the terminal did not write users/bob/terminal.txt")
        time.sleep(1)
    await shot("terminal_aws_cli")
    assert admin.get_object(Bucket="platform", Key="users/bob/terminal.txt")["Body"].read() == b"from-a-terminal\n"
    # What the user sees: the listing, also with a PATH without the venv (the AWS config names the credential
    # process by absolute path; it used to fail with `No such file or directory: 'mlplatform-aws-credentials'`).
    await type_in_terminal(page, "clear; aws s3 ls s3://platform/users/bob/ && echo listed-$((40+2))")
    await expect(terminal_text(page)).to_contain_text("listed-42", timeout=90_000)
    await expect(terminal_text(page)).to_contain_text("terminal.txt")
    await type_in_terminal(page, 'clear; env PATH=/usr/bin:/bin "$(command -v aws)" s3 ls s3://platform/users/bob/'
                                 " && echo listed-$((50+2))")
    await expect(terminal_text(page)).to_contain_text("listed-52", timeout=90_000)
    await shot("terminal_aws_cli_listing")
    await expect(terminal_text(page)).to_contain_text("terminal.txt")
