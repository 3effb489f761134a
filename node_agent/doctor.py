"""``node-agent doctor``: what is wrong with this node, and how to fix it.

Every check runs (in parallel, each with a time limit) and gives one row: a status
(ok, warning, failed, skipped), what it found, and for anything not ok the fix in
one sentence. Nothing secret is ever shown: credentials are reported as present or
absent, variables through the redacting model.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import psutil
import requests
import yaml

from node_agent.bootstrap import TOOL_PACKAGES, locate
from node_agent.env import BatchEnv, TaskKind
from node_agent.errors import InvalidInput
from node_agent.layout import (
    V2_CONFIG,
    V2_HOME_CONFIG,
    V3_CONFIG,
    V3_CREDENTIALS,
    WORKER_EXECUTABLE,
    Layout,
)
from node_agent.manager import ManagerCheck, ManagerUnavailable, probe
from node_agent.settings import Flavour, Settings, load_settings, package_config, resolve_flavour
from node_agent.state import STATE_FILE, process_alive, read_state

JSON_SCHEMA_VERSION = 1
CHECK_LIMIT = 30.0  # seconds any one check may take
TOOL_TIMEOUT = 20.0  # seconds for blender --version and friends
HTTP_TIMEOUT = 5.0
# Libraries Blender needs that minimal Linux images lack, and the Debian/Ubuntu
# packages that provide them.
LIBRARY_PACKAGES = {
    "libX11.so.6": "libx11-6",
    "libXi.so.6": "libxi6",
    "libXxf86vm.so.1": "libxxf86vm1",
    "libXfixes.so.3": "libxfixes3",
    "libXrender.so.1": "libxrender1",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libXext.so.6": "libxext6",
}


class Status(Enum):
    """How a check went."""

    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Row:
    """One check's result."""

    check: str
    status: Status
    found: str
    fix: Optional[str] = None


@dataclass(frozen=True)
class Context:
    """What the checks look at: the environment and, where they parse, the model and
    the settings."""

    environ: Mapping[str, str]
    env: Optional[BatchEnv]
    env_problems: tuple[str, ...]
    settings: Optional[Settings]
    settings_problems: tuple[str, ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Context:
        """Parse what can be parsed; keep the problems of what cannot."""
        env: Optional[BatchEnv] = None
        env_problems: tuple[str, ...] = ()
        try:
            env = BatchEnv.from_environ(environ)
        except InvalidInput as exc:
            env_problems = tuple(str(p) for p in exc.problems)
        settings: Optional[Settings] = None
        settings_problems: tuple[str, ...] = ()
        try:
            settings = load_settings(environ, {}, package_config(env))
        except InvalidInput as exc:
            settings_problems = tuple(str(p) for p in exc.problems)
        return cls(environ, env, env_problems, settings, settings_problems)

    @property
    def layout(self) -> Optional[Layout]:
        """The node's paths, when the environment parses."""
        return Layout.for_env(self.env) if self.env else None

    @property
    def flavour(self) -> Optional[Flavour]:
        """The worker generation, when it can be told."""
        if self.env is None:
            return None
        worker = self.env.find_package("flamenco-worker")
        chosen = self.settings.flavour if self.settings else Flavour.AUTO
        return resolve_flavour(chosen, worker.version if worker else None).flavour


Check = Callable[[Context], list[Row]]
_NEEDS_ENV = "skipped: the environment does not parse"


def check_environment(ctx: Context) -> list[Row]:
    """The AZ_BATCH_* environment, the kind of task and the user identity."""
    if ctx.env is None:
        return [
            Row(
                "environment",
                Status.FAILED,
                "; ".join(ctx.env_problems),
                "fix each variable named above (node-agent env lists them)",
            )
        ]
    env = ctx.env
    rows = [
        Row(
            "environment",
            Status.OK,
            f"pool {env.pool_id}, node {env.node.id} "
            f"({'dedicated' if env.node.is_dedicated else 'Spot'})",
        )
    ]
    kind = env.task.kind
    rows.append(
        Row(
            "task",
            Status.OK if kind is TaskKind.START else Status.WARNING,
            f"{kind.value} task",
            None
            if kind is TaskKind.START
            else "node-agent runs as the pool's start task; this is another task's view",
        )
    )
    identity = env.task.user_identity
    rows.append(
        Row(
            "user",
            Status.OK,
            f"{env.task.user} ({identity.value}): "
            + (
                "admin, though node-agent needs no sudo"
                if identity.is_admin
                else "non-admin: no sudo, apt or systemd, and node-agent needs none"
            ),
        )
    )
    return rows


def check_settings(ctx: Context) -> list[Row]:
    """The operator's settings."""
    if ctx.settings is None:
        return [
            Row(
                "settings",
                Status.FAILED,
                "; ".join(ctx.settings_problems),
                "correct the named settings in the pool's start task environment or "
                "node-agent.yaml",
            )
        ]
    return [
        Row(
            "settings",
            Status.OK,
            f"Manager {ctx.settings.manager_url}, worker flavour "
            f"{ctx.flavour.value if ctx.flavour else '?'}",
        )
    ]


def check_packages(ctx: Context) -> list[Row]:
    """Each expected package, its version, the executables in it."""
    if ctx.env is None:
        return [Row("packages", Status.SKIPPED, _NEEDS_ENV)]
    tools = ctx.settings.tools if ctx.settings else ("blender", "ffmpeg", "ffprobe")
    wanted = [("flamenco-worker", WORKER_EXECUTABLE)]
    wanted += [(TOOL_PACKAGES.get(tool, tool), tool) for tool in tools]
    rows = []
    for package_id in dict.fromkeys(p for p, _ in wanted):
        package = ctx.env.find_package(package_id)
        if package is None:
            rows.append(
                Row(
                    f"package {package_id}",
                    Status.FAILED,
                    "not on this node",
                    "add it to the pool's applicationPackageReferences",
                )
            )
        elif not os.path.isdir(package.path):
            rows.append(
                Row(
                    f"package {package_id}",
                    Status.FAILED,
                    f"{package.path} does not exist",
                    "Batch could not extract it: check the package zip and the "
                    "node's start-up errors",
                )
            )
        else:
            rows.append(
                Row(
                    f"package {package_id}",
                    Status.OK,
                    f"version {package.version or 'unknown'} at {package.path}",
                )
            )
    for package_id, name in wanted:
        package = ctx.env.find_package(package_id)
        if package is None or not os.path.isdir(package.path):
            continue
        found = locate(package.path, name)
        if found is None:
            rows.append(
                Row(
                    f"executable {name}",
                    Status.FAILED,
                    f"no {name} at the top of {package.path}",
                    f"rebuild the {package_id} zip with {name} at its top level",
                )
            )
        elif not found.state.executable:
            rows.append(
                Row(
                    f"executable {name}",
                    Status.FAILED,
                    f"{found.path} is not executable",
                    "rebuild the zip with the executable bit stored (zip on Linux "
                    "keeps it); node-agent bootstrap fixes files it owns",
                )
            )
        elif found.nested_in:
            rows.append(
                Row(
                    f"executable {name}",
                    Status.FAILED,
                    f"{found.path}: the zip has everything inside {found.nested_in!r} "
                    "(node-agent copes, but the package is built wrong)",
                    f"rebuild the zip from inside {found.nested_in} so files are at its top level",
                )
            )
        else:
            rows.append(Row(f"executable {name}", Status.OK, found.path))
    return rows


def check_tools(ctx: Context) -> list[Row]:
    """The tools really run, through the links on PATH."""
    tools = ctx.settings.tools if ctx.settings else ("blender", "ffmpeg", "ffprobe")
    path = ctx.environ.get("PATH", "")
    rows = []
    for tool in tools:
        flag = "--version" if tool == "blender" else "-version"
        rows.append(_run_tool(tool, flag, path))
    return rows


def _run_tool(tool: str, flag: str, path: str) -> Row:
    found = shutil.which(tool, path=path)
    name = f"{tool} {flag}"
    if found is None:
        return Row(
            name,
            Status.FAILED,
            f"{tool} is not on PATH",
            "run node-agent bootstrap (it links the tools into the shared dir)",
        )
    try:
        result = subprocess.run(
            [found, flag],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TOOL_TIMEOUT,
            env={"PATH": path},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Row(
            name,
            Status.FAILED,
            f"{found} did not answer within {TOOL_TIMEOUT:.0f} s",
            "run it by hand on the node to see where it hangs",
        )
    except OSError as exc:
        return Row(
            name,
            Status.FAILED,
            f"{found}: {exc.strerror}",
            "check the file is a Linux executable for this CPU",
        )
    first = (result.stdout.strip() or result.stderr.strip()).splitlines()[:1]
    if result.returncode != 0:
        missing = re.findall(r"(lib[\w+.-]+\.so[.\d]*): cannot open shared object", result.stderr)
        packages = sorted({LIBRARY_PACKAGES.get(lib, lib) for lib in missing})
        fix = (
            "install the system libraries it needs (usually "
            f"{' '.join(packages)}) in the pool's image or a custom image"
            if missing
            else "run it by hand on the node to see why it fails"
        )
        detail = result.stderr.strip().splitlines()[:1] or first
        return Row(
            name,
            Status.FAILED,
            f"exit {result.returncode}: {detail[0] if detail else '(no output)'}",
            fix,
        )
    return Row(name, Status.OK, first[0] if first else "(no output)")


def check_path(ctx: Context) -> list[Row]:
    """The shared dir is on PATH, as Batch promises."""
    if ctx.env is None:
        return [Row("PATH", Status.SKIPPED, _NEEDS_ENV)]
    shared = ctx.env.node.shared_dir
    if shared in ctx.environ.get("PATH", "").split(os.pathsep):
        return [Row("PATH", Status.OK, f"has the shared dir {shared}")]
    return [
        Row(
            "PATH",
            Status.FAILED,
            f"lacks the shared dir {shared}",
            "Batch puts it on every task's PATH: do not replace PATH in the start task's "
            "environment settings",
        )
    ]


def check_worker_config(ctx: Context) -> list[Row]:
    """The worker config parses; credentials present or not (never shown)."""
    layout, flavour = ctx.layout, ctx.flavour
    if layout is None or flavour is None:
        return [Row("worker config", Status.SKIPPED, _NEEDS_ENV)]
    v2 = flavour is Flavour.V2
    config = Path(layout.worker_dir, V2_CONFIG if v2 else V3_CONFIG)
    rows = []
    if not config.exists():
        rows.append(
            Row(
                "worker config",
                Status.WARNING,
                f"{config} does not exist yet",
                "node-agent run (or bootstrap) writes it",
            )
        )
    else:
        try:
            if v2:
                configparser.ConfigParser().read_string(config.read_text(encoding="utf-8"))
            elif not isinstance(yaml.safe_load(config.read_text(encoding="utf-8")) or {}, dict):
                raise ValueError("not a mapping")
            rows.append(Row("worker config", Status.OK, f"{config} ({flavour.value})"))
        except (OSError, ValueError, yaml.YAMLError, configparser.Error) as exc:
            rows.append(
                Row(
                    "worker config",
                    Status.FAILED,
                    f"{config} cannot be parsed: {str(exc).splitlines()[0]}",
                    "delete it: node-agent rewrites it at the next start",
                )
            )
    credentials = Path(layout.worker_home, V2_HOME_CONFIG if v2 else V3_CREDENTIALS)
    if credentials.exists():
        rows.append(Row("credentials", Status.OK, f"present in {credentials} (not shown)"))
    else:
        rows.append(
            Row(
                "credentials",
                Status.OK,
                "none yet: the worker registers with the Manager at its first start",
            )
        )
    return rows


def check_manager(ctx: Context) -> list[Row]:
    """The Manager answers, and how fast."""
    if ctx.settings is None or ctx.flavour is None:
        return [Row("manager", Status.SKIPPED, "skipped: the settings or environment do not parse")]
    check = ManagerCheck(
        url=ctx.settings.manager_url,
        flavour=ctx.flavour,
        cap=1.0,
        deadline=None,
        credentials=Path("/nonexistent"),
        timeout=HTTP_TIMEOUT,
    )
    started = time.monotonic()
    try:
        with requests.Session() as session:
            session.trust_env = False
            answer = probe(session, check)
    except ManagerUnavailable as exc:
        return [
            Row(
                "manager",
                Status.FAILED,
                f"{check.url}: {exc}",
                "check the Manager runs and FLAMENCO_MANAGER_URL points at it from the "
                "pool's network (firewall, port)",
            )
        ]
    elapsed = (time.monotonic() - started) * 1000
    return [Row("manager", Status.OK, f"{answer} in {elapsed:.0f} ms")]


def check_metadata(ctx: Context) -> list[Row]:
    """The Instance Metadata Service: VM name, size, priority; or not on Azure."""
    default = ctx.environ.get("NODE_AGENT_IMDS_URL", "http://169.254.169.254")
    url = (ctx.settings.imds_url if ctx.settings else default).rstrip("/")
    try:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(
                url + "/metadata/instance?api-version=2021-02-01",
                headers={"Metadata": "true"},
                timeout=2.0,
            )
        compute: dict[str, Any] = response.json()["compute"]
    except requests.RequestException:
        return [Row("metadata service", Status.SKIPPED, f"no answer from {url}: not on Azure")]
    except (ValueError, KeyError, TypeError):
        return [
            Row(
                "metadata service",
                Status.WARNING,
                f"{url} answered, but not with an instance document",
                "preemption warnings may not work: check the VM's "
                "network reaches 169.254.169.254 without a proxy",
            )
        ]
    return [
        Row(
            "metadata service",
            Status.OK,
            f"VM {compute.get('name')}, "
            f"{compute.get('vmSize')}, {compute.get('priority') or 'Regular'} priority",
        )
    ]


def check_resources(ctx: Context) -> list[Row]:
    """Free disk on the node root against Batch's reserved space; free memory."""
    rows = []
    if ctx.env is None:
        rows.append(Row("disk", Status.SKIPPED, _NEEDS_ENV))
    else:
        reserved = ctx.env.reserved_disk_space
        floor = max(
            v or 0 for v in (reserved.task_bytes, reserved.node_bytes, reserved.os_bytes, 2**30)
        )
        try:
            free = shutil.disk_usage(ctx.env.node.root_dir).free
        except OSError as exc:
            rows.append(
                Row(
                    "disk",
                    Status.FAILED,
                    f"{ctx.env.node.root_dir}: {exc.strerror}",
                    "check AZ_BATCH_NODE_ROOT_DIR",
                )
            )
        else:
            status = (
                Status.OK
                if free >= 2 * floor
                else (Status.WARNING if free >= floor else Status.FAILED)
            )
            rows.append(
                Row(
                    "disk",
                    status,
                    f"{free / 2**30:.1f} GiB free on "
                    f"{ctx.env.node.root_dir} (reserved {floor / 2**30:.1f} GiB)",
                    None
                    if status is Status.OK
                    else "free space (old job outputs, caches) or use a VM size with a "
                    "larger temporary disk",
                )
            )
    available = psutil.virtual_memory().available
    rows.append(
        Row(
            "memory",
            Status.OK if available >= 2**30 else Status.WARNING,
            f"{available / 2**30:.1f} GiB available",
            None if available >= 2**30 else "use a VM size with more memory",
        )
    )
    return rows


def check_gpus(ctx: Context) -> list[Row]:
    """GPUs visible to the node (GPU pools)."""
    smi = shutil.which("nvidia-smi", path=ctx.environ.get("PATH", os.defpath))
    if smi is None:
        return [Row("gpus", Status.SKIPPED, "no nvidia-smi: not a GPU pool")]
    try:
        result = subprocess.run(
            [smi, "-L"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        return [
            Row(
                "gpus",
                Status.FAILED,
                f"nvidia-smi failed: {exc}",
                "check the NVIDIA driver (a GPU VM image or driver extension)",
            )
        ]
    gpus = [line for line in result.stdout.splitlines() if line.startswith("GPU ")]
    if result.returncode != 0 or not gpus:
        return [
            Row(
                "gpus",
                Status.FAILED,
                (result.stderr or result.stdout).strip()[:200],
                "check the NVIDIA driver (a GPU VM image or driver extension)",
            )
        ]
    return [Row("gpus", Status.OK, f"{len(gpus)}: " + "; ".join(gpus))]


def check_agent(ctx: Context) -> list[Row]:
    """The agent's state: running, restarts, last exit."""
    if ctx.layout is None:
        return [Row("agent", Status.SKIPPED, _NEEDS_ENV)]
    state = read_state(os.path.join(ctx.layout.agent_dir, STATE_FILE))
    if state is None:
        return [
            Row(
                "agent",
                Status.WARNING,
                "has not run on this node",
                "node-agent run is the pool's start task: check startTask.commandLine",
            )
        ]
    running = process_alive(state.agent_pid, state.agent_create_time)
    last = (
        ""
        if state.last_exit_code is None
        else f", last exit {state.last_exit_code} ({state.last_exit_reason})"
    )
    found = (
        f"{'running' if running else 'not running'}, phase {state.phase}, "
        f"{state.restarts} restart(s){last}"
    )
    if state.crash_loop:
        return [
            Row(
                "agent",
                Status.FAILED,
                found + ", CRASH LOOP",
                "read the worker's output in stdout.txt/stderr.txt for why it keeps exiting",
            )
        ]
    return [
        Row(
            "agent",
            Status.OK if running else Status.WARNING,
            found,
            None
            if running
            else "the start task is not running: see its exit in "
            "Batch Explorer, or restart the node",
        )
    ]


CHECKS: tuple[Check, ...] = (
    check_environment,
    check_settings,
    check_packages,
    check_tools,
    check_path,
    check_worker_config,
    check_manager,
    check_metadata,
    check_resources,
    check_gpus,
    check_agent,
)


def run_checks(environ: Mapping[str, str], limit: float = CHECK_LIMIT) -> list[Row]:
    """Every check, in parallel, each within ``limit`` seconds; rows in check order."""
    ctx = Context.from_environ(environ)
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="doctor")
    futures = [(check, pool.submit(check, ctx)) for check in CHECKS]
    deadline = time.monotonic() + limit
    rows: list[Row] = []
    for check, future in futures:
        name = check.__name__.replace("check_", "")
        try:
            rows.extend(future.result(timeout=max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            rows.append(
                Row(
                    name,
                    Status.FAILED,
                    f"no result within {limit:.0f} s",
                    "run that check's command by hand on the node to see where it hangs",
                )
            )
    # A check past its limit is reported above; the report must not wait for it.
    pool.shutdown(wait=False, cancel_futures=True)
    return rows


def render(rows: list[Row]) -> str:
    """One aligned line per check, the fix indented below anything not ok."""
    width = max(len(r.check) for r in rows)
    lines = []
    for row in rows:
        lines.append(f"{row.status.value.upper():<8} {row.check:<{width}}  {row.found}")
        if row.fix and row.status is not Status.OK:
            lines.append(f"{'':<8} {'':<{width}}  fix: {row.fix}")
    return "\n".join(lines)


def to_json(rows: list[Row]) -> dict[str, Any]:
    """The report as the documented JSON document (``schema`` 1)."""
    return {
        "schema": JSON_SCHEMA_VERSION,
        "healthy": healthy(rows),
        "checks": [
            {"check": r.check, "status": r.status.value, "found": r.found, "fix": r.fix}
            for r in rows
        ],
    }


def healthy(rows: list[Row]) -> bool:
    """Whether no check failed."""
    return all(r.status is not Status.FAILED for r in rows)
