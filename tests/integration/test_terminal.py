"""A JupyterLab terminal of a local server, through jupyter_server's terminal API: the AWS CLI works there as
boto3 does in the notebook, with the user's brokered credentials (issue 13: a login shell reset PATH, `aws:
command not found`; the CLI by its full path failed with `[Errno 2] No such file or directory:
'mlplatform-aws-credentials'`, the config's credential process looked up on PATH)."""

from ..support.terminal import Terminal

MINE = "s3://platform/users/alice/"


async def test_the_aws_cli_in_a_terminal_uses_the_users_brokered_credentials(hub, platform):
    alice, _ = hub.start_server("alice")
    async with Terminal(platform.hub_url, "alice", alice.new_token()) as terminal:
        status, shown = await terminal.run("shopt -q login_shell")
        assert status == 1, f"the terminal is a login shell, whose /etc/profile resets PATH:\n{shown}"

        status, shown = await terminal.run(f"echo from-a-terminal | aws s3 cp - {MINE}terminal.txt")
        assert status == 0, shown
        status, shown = await terminal.run(f"aws s3 ls {MINE}")
        assert status == 0 and "terminal.txt" in shown, shown
        status, shown = await terminal.run("aws s3 ls s3://platform/users/bob/")  # alice's credentials
        assert status != 0 and "AccessDenied" in shown, shown

        # A PATH without the venv (a login shell, `env -i`, a script's own PATH): the CLI by its full path still
        # runs the credential process, which the AWS config names by absolute path.
        status, shown = await terminal.run(f'env PATH=/usr/bin:/bin "$(command -v aws)" s3 ls {MINE}')
        assert status == 0 and "terminal.txt" in shown, shown
        status, shown = await terminal.run(f"aws s3 rm {MINE}terminal.txt")
        assert status == 0, shown
