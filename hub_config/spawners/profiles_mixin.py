"""The profile + quota pipeline as spawner behaviour, shared by the local and Kubernetes spawners.

A spawner that mixes this in provides three things: `quota_snapshot()` (GPUs in use now),
`reserve(selection)` / `release()` (hold GPUs for this server, atomically with the quota check), and
`apply_selection(selection)` (turn the chosen profile into its own settings). The mixin renders the
spawn form, reads it back into user options, and re-validates user options from the form and the
REST API alike in JupyterHub's `apply_user_options` hook. It makes the team's MLflow experiment from
JupyterHub's pre-spawn step (`run_pre_spawn_hook`) on, while the server starts (`start` returns once both
are done; a configured `c.Spawner.pre_spawn_hook` runs after the experiment exists), and gives GPUs back when the pre-spawn step or `start`
fails, and once the server is gone (`poll`, `stop`) — after `stop_workloads()`, which stops what the
server started that outlives it (the local spawner's Spark jobs), so no GPU is handed on while in use.
"""

from __future__ import annotations

import asyncio
import inspect

from jinja2 import Environment, PackageLoader, select_autoescape
from mlplatform_core.catalog import Catalog, cached_catalog
from mlplatform_core.quantities import parse_cpu, parse_memory
from tornado import web
from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

from ..catalog import configured_catalog_path
from mlplatform_service.budgets import BudgetExceeded

from ..mlflow_access.handlers import MlflowAccess
from ..mlflow_access.provisioning import ProvisioningError
from ..governance import Governance
from ..platform_service import PlatformService
from ..profiles import QuotaSnapshot, Selection, SelectionError, select, spawn_choices

_templates = Environment(loader=PackageLoader("hub_config", "templates"), autoescape=select_autoescape(["html"]))


class CatalogProfilesMixin(LoggingConfigurable):
    catalog_file = Unicode(
        config=True,
        help="""
        Path of the platform catalog (platform.yaml) with teams, GPU types, quotas and profiles.

        Defaults to $MLPLATFORM_CATALOG, else the catalog bundled for the local platform.
        The catalog is validated when the first spawner loads it; an invalid catalog stops the spawn
        with a message naming the key and what is allowed.

            c.LocalPlatformSpawner.catalog_file = "/etc/mlplatform/platform.yaml"
        """,
    )

    @default("catalog_file")
    def _default_catalog_file(self):
        return configured_catalog_path()

    selection: Selection | None = None
    # One `stop` record per server life (reset by `start`): LocalProcessSpawner.stop polls until the process is
    # gone, and JupyterHub polls a server it is about to stop; a poll during `stop` leaves the record to `stop`.
    _stop_recorded: bool = False
    _stopping: bool = False
    # The team's experiment being made (from run_pre_spawn_hook), awaited by `start`.
    _experiment: asyncio.Future | None = None

    @property
    def catalog(self) -> Catalog:
        return cached_catalog(self.catalog_file)

    @property
    def governance(self) -> Governance:
        return Governance.of(self.config, self.catalog_file)

    @property
    def allocation_key(self) -> str:
        """The server's key in the usage ledger (and the audit log's target)."""
        return f"server:{self.user.name}/{self.name}"

    @property
    def platform_service_url(self) -> str:
        return PlatformService(config=self.config).url

    @property
    def user_groups(self) -> list[str]:
        return [group.name for group in self.user.groups]

    # --- to be provided by each backend -------------------------------------------------------
    def quota_snapshot(self) -> QuotaSnapshot:
        raise NotImplementedError

    def reserve(self, selection: Selection) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def apply_selection(self, selection: Selection) -> None:
        raise NotImplementedError

    async def stop_workloads(self) -> None:
        """Stop what the server started that outlives it (once it is gone, before its GPUs are released)."""

    def apply_profile_resources(self, profile) -> None:
        """The profile's CPU and memory guarantees and limits, as JupyterHub's Spawner traits."""
        for trait, value, parse in (("mem_limit", profile.memory.limit, parse_memory),
                                    ("mem_guarantee", profile.memory.guarantee, parse_memory),
                                    ("cpu_limit", profile.cpu.limit, parse_cpu),
                                    ("cpu_guarantee", profile.cpu.guarantee, parse_cpu)):
            if value is not None:
                setattr(self, trait, parse(value))

    # --- JupyterHub hooks ---------------------------------------------------------------------
    @default("default_url")
    def _default_default_url(self):
        return "/lab"

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return lambda spawner, user_options: spawner._apply_user_options(user_options)

    def _render_options_form(self, spawner=None) -> str:
        teams = spawn_choices(self.catalog, self.user_groups, self.quota_snapshot())
        if not teams:
            # Only admins get here (other users are refused at login): nothing to offer.
            return "<p class='alert alert-warning'>You are not a member of any team of this platform.</p>"
        previous = (self.orm_spawner.user_options or {}) if self.orm_spawner else {}
        checked = (previous.get("team"), previous.get("profile"))
        available = {(t.team, c.slug) for t in teams for c in t.profiles if c.available}
        if checked not in available:
            defaults = [(t.team, c.slug) for t in teams for c in t.profiles if c.available and c.profile.default]
            checked = (defaults or sorted(available) or [None])[0]
        return _templates.get_template("spawn_form.html").render(teams=teams, checked=checked,
                                                                budgets=self._budget_lines(teams))

    def _budget_lines(self, teams) -> dict:
        """Each offered team's budget status; none when the database does not answer (the form still works,
        the spawn is checked again at admission)."""
        try:
            return {t.team: self.governance.status(t.team) for t in teams}
        except Exception as e:
            self.log.warning("No budget lines on the spawn form: %s: %s", type(e).__name__, e)
            return {}

    @staticmethod
    def _options_from_form(form_data) -> dict:
        """Form fields → user options ({"team", "profile", "gpu_type", "gpu_count"})."""
        choice = (form_data.get("profile") or [""])[0]
        team, _, profile = choice.partition("/")
        if not team or not profile:
            raise web.HTTPError(400, "Choose a profile.")
        options = {"team": team, "profile": profile}
        gpu = (form_data.get(f"gpu--{team}--{profile}") or [""])[0]
        if gpu:
            gpu_type, _, count = gpu.partition(":")
            options.update(gpu_type=gpu_type, gpu_count=int(count) if count.isascii() and count.isdecimal() else count)
        return options

    def _apply_user_options(self, user_options: dict) -> None:
        # select + reserve run without awaiting: atomic with respect to other spawns in the hub.
        try:
            selection = select(self.catalog, self.user_groups, self.quota_snapshot(), user_options)
            self.reserve(selection)
        except SelectionError as e:
            raise web.HTTPError(e.status, "%s", str(e)) from None
        try:  # the team's budget, atomically too (under the team's lock in the database)
            self.governance.admit(self.allocation_key, kind="server", team=selection.team, user=self.user.name,
                                  gpu_type=selection.gpu_type, gpus=selection.gpu_count, profile=selection.profile)
        except BudgetExceeded as e:
            self.release()
            raise web.HTTPError(e.status, "%s", e.message) from None
        self.selection = selection
        self.apply_selection(selection)
        self.log.info("Applied profile %s of team %s to %s (GPUs: %s %s)", selection.profile, selection.team,
                      self._log_name, selection.gpu_count, selection.gpu_type or "-")

    # --- the server's life: GPUs are held from apply_user_options until the server is gone --------
    async def run_pre_spawn_hook(self):
        """Start making the team's experiment, then run the configured `pre_spawn_hook` once it exists
        (JupyterHub calls this before `start`). Without a configured hook the experiment is made while the
        server starts (a fresh team's takes ~10 MLflow requests, seconds on a busy machine)."""
        try:
            self._experiment = None
            if self.selection is not None:
                self._experiment = asyncio.ensure_future(self._ensure_team_experiment())
                if self.pre_spawn_hook:  # a deployment's hook may rely on the experiment
                    await self._experiment
            result = super().run_pre_spawn_hook()
            if inspect.isawaitable(result):
                await result
        except BaseException:
            self._cancel_experiment()
            self.end_allocation()
            raise

    async def start(self):
        self._stop_recorded = False
        try:
            url = await super().start()
            if self._experiment is not None:  # the server is started once its team's experiment exists too
                await self._experiment
        except BaseException as e:
            self._cancel_experiment()
            self.end_allocation()
            self._audit("spawn", "failed", error=f"{type(e).__name__}: {e}")
            raise
        self._audit("spawn", "succeeded")
        return url

    def _cancel_experiment(self) -> None:
        if self._experiment is not None and not self._experiment.done():
            self._experiment.cancel()  # its MLflow requests finish in their thread; nobody waits for them

    async def _ensure_team_experiment(self) -> None:
        """The team's MLflow workspace, roles and experiment (mlflow_access/provisioning.py)."""
        # Without MLflow the notebook is still useful: say so in the log, do not refuse the server.
        provisioner = MlflowAccess.of(self.config).provisioner
        try:
            await asyncio.to_thread(provisioner.ensure_team, self.catalog, self.selection.team)
        except ProvisioningError as e:
            self.log.warning("No MLflow workspace or experiment for team %s: %s", self.selection.team, e)

    async def poll(self):
        selection = self.selection  # LocalProcessSpawner's poll clears the state of a process that has gone
        status = await super().poll()
        if status is not None:
            try:
                await self.stop_workloads()
            finally:
                self.end_allocation()  # a server that has exited holds no GPUs
                if not self._stopping:  # it ended on its own
                    self._record_stop(selection, exit_status=str(status))
        return status

    async def stop(self, now=False):
        selection, self._stopping = self.selection, True
        try:
            await super().stop(now=now)
            await self.stop_workloads()
        finally:
            self._stopping = False
            self.end_allocation()
            self._record_stop(selection)

    def end_allocation(self) -> None:
        """The server holds nothing any more: its quota reservation and its interval in the usage ledger."""
        self.release()
        if self.selection is not None:
            try:
                self.governance.release(self.allocation_key)
            except Exception:
                self.log.exception("Could not close %s in the usage ledger", self.allocation_key)

    def _record_stop(self, selection: Selection | None, **details) -> None:
        if not self._stop_recorded:
            self._stop_recorded = True
            self._audit("stop", "succeeded", selection, **details)

    def _audit(self, action: str, outcome: str, selection: Selection | None = None, **details) -> None:
        selection = selection or self.selection
        if selection is not None:
            details = {"profile": selection.profile, "gpu_type": selection.gpu_type, "gpus": selection.gpu_count,
                       **details}
        self.governance.record(action, actor=self.user.name, team=selection.team if selection else None,
                               target=self.allocation_key, outcome=outcome, details=details)

    # --- the selection survives hub restarts in the spawner's state --------------------------------
    def get_state(self):
        state = super().get_state()
        if self.selection is not None:
            state["selection"] = self.selection.as_user_options()
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("selection"):
            self.selection = Selection(**state["selection"])

    def clear_state(self):
        self.end_allocation()  # first: the reservation's key may depend on state cleared below
        super().clear_state()
        self.selection = None
