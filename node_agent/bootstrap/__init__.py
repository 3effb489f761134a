"""Turn a parsed environment into a ready node: links on PATH, worker config.

Three steps, so the decisions are testable without a node:

- ``survey`` (its own module) reads what is on the node now (I/O, read-only);
- ``plan`` decides, from the environment, the settings and that survey, what must
  change and why (pure);
- ``apply`` carries the plan out (I/O in ``actions``; atomic per file and link).

Re-running on an unchanged node plans nothing but ``keep`` actions, so the start
task can run as often as Batch likes.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Optional

from node_agent.bootstrap.actions import Action, ActionKind, carry_out
from node_agent.bootstrap.survey import TOOL_PACKAGES, Kind, Survey
from node_agent.bootstrap.toolentry import plan_entry, stale_libs_dirs
from node_agent.bootstrap.workerconfig import render_v2, render_v3, v2_credentials
from node_agent.common.errors import InvalidInput, Problem, RuntimeFailure
from node_agent.config.settings import Settings
from node_agent.node.env import BatchEnv
from node_agent.node.flavour import Flavour, FlavourChoice, resolve_flavour
from node_agent.node.layout import (
    V2_CONFIG,
    V3_CONFIG,
    WORKER_EXECUTABLE,
    Layout,
    default_worker_name,
)
from node_agent.node.packages import AppPackage

# The v3 worker's own exit codes: never a restart exit code.
V3_OWN_EXIT_CODES = (1, 2, 254)
V3_OWN_EXIT_CODES_WHY = (
    "the v3 worker exits 1 after SIGTERM or a fatal error, 2 when it panics and 254 when "
    "its shutdown is forced: with one of these as its restart code a failure would look "
    "like a restart request and be restarted at once, without backoff; pick another, such "
    "as 75 (the default)"
)


@dataclass(frozen=True)
class Plan:
    """Everything bootstrap will do, and what the operator should know."""

    flavour: FlavourChoice
    worker_name: str
    worker_executable: str
    layout: Layout
    actions: tuple[Action, ...]
    notes: tuple[str, ...]
    blocked: Optional[str] = None  # why it cannot be applied on this node (a node fault)

    @property
    def changes(self) -> tuple[Action, ...]:
        """The actions that change something."""
        return tuple(a for a in self.actions if a.kind is not ActionKind.KEEP)

    @property
    def config_path(self) -> str:
        """The worker config file for the chosen flavour."""
        name = V2_CONFIG if self.flavour.flavour is Flavour.V2 else V3_CONFIG
        return posixpath.join(self.layout.worker_dir, name)


__all__ = ["Action", "ActionKind", "Plan", "apply", "plan"]

# ------------------------------------------------------------------ plan (pure)


class _Planner:
    def __init__(self, env: BatchEnv, settings: Settings, node: Survey) -> None:
        self.env = env
        self.settings = settings
        self.node = node
        self.layout = Layout.for_env(env)
        self.actions: list[Action] = []
        self.notes: list[str] = []
        self.problems: list[Problem] = []

    def package(self, package_id: str, required: bool) -> Optional[AppPackage]:
        package = self.env.find_package(package_id)
        if package is None:
            message = (
                f"no {package_id!r} application package on this node; add it to the "
                "pool's applicationPackageReferences"
            )
            if required:
                self.problems.append(Problem(f"package {package_id}", message))
            else:
                self.notes.append(f"package {package_id}: {message}")
            return None
        if not self.node.package_dirs.get(package.path, False):
            message = (
                f"package folder {package.path} does not exist; Batch failed to extract "
                "the package, or the environment points elsewhere"
            )
            if required:
                self.problems.append(Problem(package.variables[0], message))
            else:
                self.notes.append(f"{package.variables[0]}: {message} (skipped: not asked for)")
            return None
        return package

    def executable(self, package: AppPackage, name: str, required: bool) -> Optional[str]:
        found = self.node.executables.get((package.path, name))
        if found is None:
            message = (
                f"no {name!r} executable at the top of package folder {package.path}; "
                f"the zip must hold {name} at its top level"
            )
            if required:
                self.problems.append(Problem(name, message))
            else:
                self.notes.append(f"{name}: {message} (skipped: not asked for explicitly)")
            return None
        if found.nested_in is not None:
            self.notes.append(
                f"WARNING: {name}: package {package.id or package.path} has everything inside "
                f"the folder {found.nested_in!r}; using {found.path}. Fix: rebuild the zip "
                f"from inside that folder (cd {found.nested_in} && zip -r ../package.zip .)"
            )
        if not found.state.executable:
            if found.state.owned:
                mode = found.state.mode | ((found.state.mode & 0o444) >> 2)
                self.actions.append(
                    Action(
                        ActionKind.MAKE_EXECUTABLE,
                        found.path,
                        "the zip did not keep the executable bit",
                        mode=mode,
                    )
                )
            else:
                self.problems.append(
                    Problem(
                        found.path,
                        (
                            "is not executable and belongs to another user, so node-agent "
                            "cannot fix it; rebuild the package zip with the executable bit "
                            "stored (zip on Linux/macOS keeps it; packaging/build does)"
                        ),
                    )
                )
                return None
        return found.path

    def directory(self, path: str, mode: int, reason: str) -> None:
        state = self.node.at(path)
        if state.kind is Kind.MISSING:
            self.actions.append(Action(ActionKind.CREATE_DIR, path, reason, mode=mode))
        elif state.kind is not Kind.DIR:
            self.problems.append(
                Problem(
                    path,
                    f"is a {state.kind.value}, expected a directory; "
                    "remove it so node-agent can create its own",
                )
            )

    def entry(self, tool: str, target: str) -> list[str]:
        """Plan the tool's entry on PATH; the folder of libraries it uses, if any."""
        if target in self.node.libraries and self.node.libraries[target] is None:
            self.notes.append(
                f"WARNING: {tool}: its package brings libraries, but there is no ldd to ask "
                "which ones this node lacks; they are not used"
            )
        state = self.node.at(self.layout.link(tool))
        libraries = self.node.libraries.get(target)
        entry = plan_entry(
            self.layout,
            tool,
            target,
            state,
            libraries=libraries,
            libs_dirs=self.node.libs_dirs,
            cycles_device=self.settings.cycles_device if tool == "blender" else None,
        )
        self.actions += entry.actions
        self.notes += entry.notes
        self.problems += entry.problems
        return [entry.libs_dir] if entry.libs_dir else []

    def config_file(self, path: str, content: bytes, mode: int) -> None:
        state = self.node.at(path)
        if state.kind is Kind.FILE and state.content == content and state.mode == mode:
            self.actions.append(Action(ActionKind.KEEP, path, "unchanged"))
            return
        reason = {Kind.MISSING: "new", Kind.FILE: "settings changed"}.get(state.kind)
        if state.kind is Kind.SYMLINK:
            reason = f"replaces a symlink to {state.link_target} (not followed)"
            self.notes.append(
                f"WARNING: {path} was a symlink to {state.link_target}; "
                "replaced by a regular file, the link target left untouched"
            )
        if reason is None:
            self.problems.append(
                Problem(
                    path, f"is a {state.kind.value}, expected the worker config file; remove it"
                )
            )
            return
        self.actions.append(Action(ActionKind.WRITE_FILE, path, reason, content=content, mode=mode))

    def credentials(self, path: str, who: str) -> None:
        if self.node.at(path).kind is Kind.FILE:
            self.actions.append(Action(ActionKind.KEEP, path, f"{who} credentials, never touched"))
        else:
            self.notes.append(
                f"no worker credentials yet ({path}): the worker registers "
                "with the Manager at its first start"
            )

    def plan(self) -> Plan:
        layout, settings = self.layout, self.settings
        worker_package = self.package("flamenco-worker", required=True)
        choice = resolve_flavour(
            settings.flavour, worker_package.version if worker_package else None
        )
        if choice.guessed:
            self.notes.append(f"WARNING: {choice.reason}")
        name = settings.worker_name or default_worker_name(
            self.env.pool_id, self.env.node.id, self.node.host_name
        )

        self.directory(layout.agent_dir, 0o755, "node-agent's state")
        self.directory(layout.worker_dir, 0o755, "the worker's working dir and config")
        self.directory(layout.worker_home, 0o700, "the worker's credentials and queue")

        worker_exe = None
        if worker_package is not None:
            worker_exe = self.executable(worker_package, WORKER_EXECUTABLE, required=True)
        libs_dirs: list[str] = []
        for tool in settings.tools:
            package = self.package(TOOL_PACKAGES.get(tool, tool), settings.tools_explicit())
            target = package and self.executable(package, tool, settings.tools_explicit())
            if target:
                libs_dirs += self.entry(tool, target)
        self.actions += stale_libs_dirs(layout, settings.tools, libs_dirs, self.node.libs_dirs)

        if choice.flavour is Flavour.V2:
            self.v2_config()
        else:
            self.v3_worker()
            content = render_v3(
                settings.manager_url,
                settings.task_types,
                settings.restart_exit_code,
                name,
                settings.oom_score_adjust,
            )
            self.config_file(posixpath.join(layout.worker_dir, V3_CONFIG), content, 0o644)
        self.credentials(layout.credentials(choice.flavour), f"{choice.flavour.value} worker")

        if self.problems:
            raise InvalidInput("the node cannot be set up", self.problems)
        return Plan(
            flavour=choice,
            worker_name=name,
            worker_executable=worker_exe or "",
            layout=layout,
            actions=tuple(self.actions),
            notes=tuple(self.notes),
            blocked=self.node.shared_problem and f"the shared dir {self.node.shared_problem}",
        )

    def v3_worker(self) -> None:
        """The v3 worker's own exit codes, and the ffmpeg it really runs."""
        code, found = self.settings.restart_exit_code, self.node.bundled_ffmpeg
        if code in V3_OWN_EXIT_CODES:
            where = f"restart_exit_code={code} (from {self.settings.source('restart_exit_code')})"
            self.problems.append(Problem(where, V3_OWN_EXIT_CODES_WHY))
        if found is None:
            return
        chosen = "ffmpeg" in self.settings.tools and self.env.find_package("ffmpeg") is not None
        fix = "; not the ffmpeg package. Rebuild the package with packaging/build" if chosen else ""
        self.notes.append(
            f"{'WARNING: ' if chosen else ''}ffmpeg tasks run {found.path}, bundled in the "
            f"flamenco-worker package (the worker tries it before PATH){fix}"
        )
        why = "the worker fails every ffmpeg task when its bundled ffmpeg is not executable"
        if found.state.executable:
            return
        if found.state.owned:
            mode = found.state.mode | ((found.state.mode & 0o444) >> 2)
            self.actions.append(Action(ActionKind.MAKE_EXECUTABLE, found.path, why, mode=mode))
        else:
            self.notes.append(f"WARNING: {found.path} is not executable: {why} (no fallback)")

    def v2_config(self) -> None:
        path = posixpath.join(self.layout.worker_dir, V2_CONFIG)
        old = self.node.at(path).content
        try:
            credentials = v2_credentials(old.decode("utf-8", "replace")) if old else {}
        except ValueError as exc:
            self.problems.append(
                Problem(
                    path,
                    (
                        f"cannot be parsed ({exc}) and may hold this worker's credentials, so "
                        "node-agent will not overwrite it; fix or remove it"
                    ),
                )
            )
            return
        settings = self.settings
        content = render_v2(
            settings.manager_url,
            settings.task_types,
            self.layout.worker_dir,
            settings.registration_secret,
            credentials,
        )
        secret = bool(settings.registration_secret or credentials)
        self.config_file(path, content, 0o600 if secret else 0o644)


def plan(env: BatchEnv, settings: Settings, node: Survey) -> Plan:
    """Decide what bootstrap must do; raise ``InvalidInput`` with every problem."""
    return _Planner(env, settings, node).plan()


def applicable(plan: Plan) -> None:
    """Raise ``RuntimeFailure`` when the node cannot take the plan at all."""
    if plan.blocked:
        raise RuntimeFailure(plan.blocked)


def apply(plan: Plan) -> list[Action]:
    """Carry out the plan's changes in order; return them. Stops at the first
    failure with ``RuntimeFailure`` naming the path and the cause."""
    applicable(plan)
    return carry_out(plan.changes)
