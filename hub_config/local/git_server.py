"""The local platform's Git server: the bare repositories under a root directory, served over smart HTTP
by git's own `git http-backend` (a CGI program) behind HTTP Basic authentication, on 127.0.0.1 only.

It holds the platform's GitOps repository (`<data>/git/platform/gitops.git`, made by `init_repository`
on first start): the platform service commits what users deploy there, as it would to GitHub or
GitLab in a cluster. Every request needs the platform's GitOps credential (a user and a token);
without it the answer is 401 with `WWW-Authenticate`, as a hosted Git server answers. The server knows
only the token's SHA-256 (`MLPLATFORM_GIT_USERS="user:sha256hex"`): no token is in its environment,
its command line or its log, which names each request's method, path, status and user.

Run: `python -m hub_config.local.git_server --root DIR --port PORT` (`command()` builds it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tornado import httpserver, ioloop, web

USERS_VARIABLE = "MLPLATFORM_GIT_USERS"
REALM = "mlplatform GitOps"
log = logging.getLogger("mlplatform.git_server")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def users_value(credentials: dict[str, str]) -> str:
    """The server's `MLPLATFORM_GIT_USERS` for {user: token}: users and their tokens' digests."""
    return ",".join(f"{user}:{token_digest(token)}" for user, token in credentials.items())


def command(root: Path, port: int, credentials: dict[str, str], python: str = sys.executable) -> tuple[list[str], dict]:
    """The server's command line and the variable only it gets (the digests of the tokens it accepts)."""
    return [python, "-m", "hub_config.local.git_server", f"--root={root}", f"--port={port}"], \
        {USERS_VARIABLE: users_value(credentials)}


# --- the repository ---------------------------------------------------------------------------------
def init_repository(path: Path, *, files: dict[str, str], committer: tuple[str, str], message: str,
                    branch: str = "main") -> bool:
    """Make the bare repository `path` with a first commit of `files` on `branch`, unless it exists (False).
    History is kept: pushes that rewrite it (force pushes) and branch deletions are refused. Made in a
    temporary directory and renamed, so a start killed half-way leaves no half-made repository."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    git = ["git", f"--git-dir={tmp}"]
    name, email = committer
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}

    def run(*args: str, stdin: str | None = None) -> str:
        return subprocess.run([*git, *args], input=stdin, env=env, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    run("init", "--quiet", "--bare", f"--initial-branch={branch}")
    for key, value in (("receive.denyNonFastForwards", "true"), ("receive.denyDeletes", "true"),
                       ("http.receivepack", "true")):
        run("config", key, value)
    entries = [f"100644 blob {run('hash-object', '-w', '--stdin', stdin=text)}\t{file}"
               for file, text in sorted(files.items())]
    tree = run("mktree", stdin="\n".join(entries) + "\n")
    run("update-ref", f"refs/heads/{branch}", run("commit-tree", tree, "-m", message))
    tmp.rename(path)
    return True


# --- the server -------------------------------------------------------------------------------------
def _http_backend() -> str:
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    backend = Path(exec_path) / "git-http-backend"
    if not backend.exists():
        raise SystemExit(f"git-http-backend is missing in {exec_path}: install git (Debian's `git` package has it)")
    return str(backend)


def parse_users(value: str) -> dict[str, str]:
    users = dict(entry.split(":", 1) for entry in value.split(",") if entry)
    if not users:
        raise SystemExit(f"{USERS_VARIABLE} is empty: the server would accept nobody (set user:sha256hex)")
    return users


class Health(web.RequestHandler):
    def get(self):
        self.finish("ok\n")


class GitHandler(web.RequestHandler):
    """Every request of the smart HTTP protocol (info/refs, git-upload-pack, git-receive-pack), handed to
    git http-backend as CGI once the caller is authenticated."""

    def initialize(self, root: Path, users: dict[str, str], backend: str):
        self.root, self.users, self.backend = root, users, backend
        self.user: str | None = None

    def _authenticated_user(self) -> str | None:
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, token = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected, token_digest(token)):
            return None
        return user

    async def get(self, path: str):
        self.user = self._authenticated_user()
        if self.user is None:
            self.set_status(401)
            self.set_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
            self.finish("authentication required: the platform's GitOps credential (user and token)\n")
            return
        headers = self.request.headers
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": "/" + path,
               "REQUEST_METHOD": self.request.method, "QUERY_STRING": self.request.query,
               "REMOTE_USER": self.user, "REMOTE_ADDR": self.request.remote_ip or "",
               "CONTENT_TYPE": headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(self.request.body)),
               # gzip-compressed request bodies (git sends them) are unpacked by http-backend itself.
               "HTTP_CONTENT_ENCODING": headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": headers.get("Git-Protocol", "")}
        proc = await asyncio.create_subprocess_exec(self.backend, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    env=env, cwd=self.root)
        out, err = await proc.communicate(self.request.body)
        if err:
            log.warning("git http-backend (%s %s): %s", self.request.method, path, err.decode(errors="replace").strip())
        head, sep, body = out.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = out.partition(b"\n\n")
        if not sep:
            raise web.HTTPError(502, f"git http-backend exited with code {proc.returncode} without an answer")
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                code, _, reason = value.strip().partition(" ")
                self.set_status(int(code), reason or None)
            else:
                self.set_header(name.strip(), value.strip())
        self.finish(body)

    post = get

    def compute_etag(self):
        return None  # responses are live repository state


def _log_request(handler: web.RequestHandler) -> None:
    """method, path (with the query: the Git service asked for), status, user; never a header."""
    user = getattr(handler, "user", None) or "-"
    log.info("%d %s %s user=%s %.0fms", handler.get_status(), handler.request.method, handler.request.uri, user,
             1000 * handler.request.request_time())


def make_app(root: Path, users: dict[str, str]) -> web.Application:
    return web.Application([(r"/healthz", Health),
                            (r"/(.+)", GitHandler, {"root": root, "users": users, "backend": _http_backend()})],
                           log_function=_log_request)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m hub_config.local.git_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="the directory holding the bare repositories")
    p.add_argument("--port", type=int, required=True, help="the port on 127.0.0.1")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    users = parse_users(os.environ.pop(USERS_VARIABLE, ""))
    server = httpserver.HTTPServer(make_app(args.root.resolve(), users))
    server.listen(args.port, address="127.0.0.1")
    log.info("serving the Git repositories under %s on http://127.0.0.1:%d", args.root, args.port)
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
