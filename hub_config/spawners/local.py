"""The local backend's spawner: profiles and quota on one machine.

Notebook servers run as processes of the hub's own OS user (like SimpleLocalProcessSpawner), with
homes under the platform's data directory. GPUs come from the catalog's local device pools and are
handed to the server through CUDA_VISIBLE_DEVICES; the pools may be declared on a machine without
GPUs, for trying and testing. Memory and CPU limits of the profile are exported as JupyterHub's
MEM_LIMIT / CPU_LIMIT (shown by jupyter-resource-usage) but, as with every local process spawner,
not enforced.

The GPU pools are a registry of the hub process, one pool per catalog path (the devices a catalog
file lists are one machine's), shared by every spawner and owned by none. A pool keeps the path, not
a catalog: it reads the current version of the file on every use (`cached_catalog`). Served models'
reservations (hub_config/gpu_handler.py) are kept in `<data_dir>/gpu-reservations.json`.

Local Spark jobs run in sessions of their own and would outlive the server that submitted them,
on devices the pool hands to the next server: once a server is gone, and before its GPUs are
released, the hub stops the jobs it submitted (`python -m mlplatform.spark.local_cli stop-server`,
a subprocess: the hub does not import the notebook package).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from typing import ClassVar

from jupyterhub.spawner import SimpleLocalProcessSpawner
from mlplatform_core.catalog import cached_catalog
from traitlets import Float, Unicode, default

from ..environment import notebook_environment
from ..gpu_pool import Allocation, GpuPool
from ..profiles import QuotaSnapshot, Selection
from .local_tools import NO_LANGUAGE_SERVER_SEARCH_ARG, TERMINAL_SHELL_ARG, server_path, write_aws_config
from .profiles_mixin import CatalogProfilesMixin

# How often start() checks whether the new server listens yet (a refused local connection costs ~0.1 ms).
LISTEN_POLL_INTERVAL = 0.05


class ListeningLocalProcessSpawner(SimpleLocalProcessSpawner):
    """`start` returns once the server's process listens on its port, or fails as soon as the process exits.

    JupyterHub asks a started server whether it is up with an exponential backoff with full jitter (waits
    drawn from 0..0.2 s, 0..0.4 s, ... up to 0..5 s): a server that listened after 4 s was seen up to 3 s
    later, and one that exited while starting only after `http_timeout`. Checked here every 50 ms, the
    hub's first check finds the server answering. The wait counts against `start_timeout`."""

    async def start(self):
        ip, port = await super().start()
        await self._until_listening(ip, port)
        return ip, port

    async def _until_listening(self, ip: str, port: int) -> None:
        while not await _listens(ip, port):
            status = self.proc.poll()
            if status is not None:
                raise RuntimeError(f"The server of {self._log_name} exited with code {status} while starting; "
                                   "its output is in the hub's log")
            await asyncio.sleep(LISTEN_POLL_INTERVAL)


async def _listens(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(ip, port)
    except OSError:
        return False
    writer.close()
    return True


class LocalPlatformSpawner(CatalogProfilesMixin, ListeningLocalProcessSpawner):
    _pools: ClassVar[dict[str, GpuPool]] = {}
    _jobs_stopped = False  # this server's Spark jobs were stopped since it last started

    data_dir = Unicode(
        config=True,
        help="""
        The local platform's data directory; user homes are created under `<data_dir>/home/<user>`.

        Defaults to $MLPLATFORM_DATA_DIR, else `.mlplatform` in the hub's working directory.

            c.LocalPlatformSpawner.data_dir = "/srv/mlplatform"
        """,
    )

    spark_stop_timeout = Float(
        60,
        config=True,
        help="""
        Seconds the hub waits for a stopped server's local Spark jobs to end (SIGTERM, then SIGKILL
        after 10 s) before it releases the server's GPUs anyway and logs a warning.

            c.LocalPlatformSpawner.spark_stop_timeout = 120
        """,
    )

    @default("data_dir")
    def _default_data_dir(self):
        return os.environ.get("MLPLATFORM_DATA_DIR") or os.path.abspath(".mlplatform")

    @default("home_dir_template")
    def _default_home_dir_template(self):
        return str(Path(self.data_dir, "home", "{username}"))

    @default("cmd")
    def _default_cmd(self):
        # The single-user server of the hub's own environment, so the bundle is importable there; ours starts
        # no Node.js process (mlplatform/singleuser.py).
        return [str(Path(sys.executable).parent / "mlplatform-jupyterhub-singleuser")]

    @property
    def pool(self) -> GpuPool:
        path = self.catalog_file
        if path not in self._pools:
            self._pools[path] = GpuPool(lambda: cached_catalog(path),
                                        state_file=Path(self.data_dir, "gpu-reservations.json"))
        return self._pools[path]

    @property
    def _pool_key(self) -> str:
        return f"{self.user.name}/{self.name}"

    @property
    def devices(self) -> tuple[str, ...]:
        alloc = self.pool.holder_of(self._pool_key)
        return alloc.devices if alloc else ()

    def quota_snapshot(self) -> QuotaSnapshot:
        return self.pool.snapshot()

    def reserve(self, selection: Selection) -> None:
        self.pool.reserve(self._pool_key, selection)

    def release(self) -> None:
        self.pool.release(self._pool_key)

    async def start(self):
        self._jobs_stopped = False
        return await super().start()

    async def stop_workloads(self) -> None:
        """Stop the local Spark jobs this server submitted (they may use its GPUs); once per server life."""
        if self._jobs_stopped or importlib.util.find_spec("mlplatform") is None:
            return  # stopped already, or a hub-only install: no notebook package, no local job
        self._jobs_stopped = True
        command = [sys.executable, "-m", "mlplatform.spark.local_cli", "stop-server", f"--home={self.home_dir}",
                   f"--user={self.user.name}", f"--server={self.name}"]
        proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.spark_stop_timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            self.log.warning("The local Spark jobs of %s did not stop within %s s", self._log_name,
                             self.spark_stop_timeout)
            return
        text = out.decode(errors="replace").strip()
        if proc.returncode:
            self.log.warning("Stopping the local Spark jobs of %s failed (%s): %s", self._log_name,
                             proc.returncode, text[-2000:])
        else:
            self.log.info("%s: %s", self._log_name, text)

    def apply_selection(self, selection: Selection) -> None:
        self.apply_profile_resources(self.catalog.profiles[selection.profile])

    def get_args(self):
        args = super().get_args()
        args.append(TERMINAL_SHELL_ARG)  # terminals keep the server's PATH (local_tools.py says why)
        args.append(NO_LANGUAGE_SERVER_SEARCH_ARG)
        if os.geteuid() == 0:
            # Servers run as the hub's user; in a root container (CI, a dev VM) that is root.
            args.append("--ServerApp.allow_root=True")
        return args

    def get_env(self):
        env = super().get_env()
        # The venv's tools (aws, mlflow, ray) for the server's kernels and terminals, as its Python is the venv's.
        env["PATH"] = server_path(env.get("PATH"))
        if self.selection is not None:
            aws_config = write_aws_config(self.data_dir)  # names the venv's credential process by absolute path
            env.update(notebook_environment(self.catalog, self.user.name, self.selection,
                                            hub_api_url=self.hub.api_url, aws_config_file=str(aws_config),
                                            server_name=self.name, service_url=self.platform_service_url))
            # An empty value hides every GPU from a CPU profile on a machine that has some.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.devices)
            # The shared local Ray head (Ray Serve deployments) of this local platform: its ports and
            # its root in the platform's private data directory.
            for name in ("MLPLATFORM_RAY_PORT", "MLPLATFORM_RAY_DIR"):
                if os.environ.get(name):
                    env[name] = os.environ[name]
        return env

    def get_state(self):
        state = super().get_state()
        if self.selection is not None:
            state["devices"] = list(self.devices)
        return state

    def load_state(self, state):
        super().load_state(state)
        if self.selection is not None and self.selection.gpu_type and state.get("devices"):
            alloc = Allocation(self.selection.team, self.selection.gpu_type, tuple(state["devices"]))
            self.pool.restore(self._pool_key, alloc)
