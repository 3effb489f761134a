"""The operator's choices: typed, validated, merged from four sources.

Precedence: command line > environment (the pool's ``startTask.environmentSettings``)
> YAML file (``NODE_AGENT_CONFIG``, else ``node-agent.yaml`` at the top of the
``flamenco-worker`` package, beside the agent) > defaults. Every bad value is
reported at once, naming the setting and where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from node_agent.common import fsutil
from node_agent.common.errors import InvalidInput, Problem
from node_agent.common.redact import describe_yaml_error, shown
from node_agent.config.specs import BY_KEY, SPECS
from node_agent.node.env import BatchEnv
from node_agent.node.flavour import Flavour

CONFIG_FILE_NAME = "node-agent.yaml"
CONFIG_ENV = "NODE_AGENT_CONFIG"
MAX_CONFIG_BYTES = 1 << 20  # a full settings file is under 2 KiB


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved. ``sources`` says where each value came from."""

    manager_url: str
    task_types: Optional[tuple[str, ...]]  # None: the worker generation's defaults
    worker_name: Optional[str]  # None: derived from the node id
    flavour: Flavour
    restart_exit_code: int
    worker_tags: tuple[str, ...]  # names of tags on the Manager
    oom_score_adjust: Optional[int]  # None: the worker adjusts nothing
    worker_args: tuple[str, ...]  # extra command-line arguments for the worker
    registration_secret: Optional[str]
    tools: tuple[str, ...]
    stop_grace: float
    backoff_initial: float
    backoff_cap: float
    backoff_reset_after: float
    restart_on_clean_exit: bool
    min_uptime: float
    max_restarts: int
    timestamps: bool
    manager_wait_cap: float
    manager_wait_deadline: Optional[float]
    watch_events: bool
    ack_events: bool
    forget_worker: Optional[bool]  # None: on for Spot nodes
    imds_url: str
    storage_mounts: tuple[str, ...]  # relative to AZ_BATCH_NODE_MOUNTS_DIR
    storage_wait_cap: float
    install_system_packages: bool
    gpu_tags: tuple[str, ...]  # added to worker_tags when the node has a usable GPU
    cycles_device: Optional[str]  # Blender's --cycles-device override (None: the .blend's)
    sources: tuple[tuple[str, str], ...]

    def source(self, key: str) -> str:
        """Where a setting came from: ``command line``, ``environment VAR``, the YAML
        file's path, or ``default``."""
        return dict(self.sources)[key]

    def tools_explicit(self) -> bool:
        """Whether the operator chose the tools (a missing one is then an error)."""
        return self.source("tools") != "default"


# ---- value parsers: text in, typed value out, ValueError("what was expected") ----


def _yaml_text(value: Any, many: bool) -> str:
    """A YAML value as the text the parsers read (a list: one item a line, for a
    setting that takes ``many``); ``ValueError`` for a shape the setting does not
    take: a list joined into one value would be a value of several lines."""
    if isinstance(value, list):
        if not many:
            raise ValueError("expected a single value, not a list")
        if any(isinstance(item, (list, dict)) for item in value):
            raise ValueError("expected a list of single values, not of lists or mappings")
        # One item a line: names and worker arguments may contain spaces.
        return "\n".join(_yaml_scalar(item) for item in value)
    if isinstance(value, dict):
        raise ValueError(f"expected {'a list or ' if many else ''}a single value, not a mapping")
    return _yaml_scalar(value)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def read_config_file(path: Path, problems: list[Problem]) -> dict[str, str]:
    """The settings in a YAML file, as text; problems are appended, not raised."""
    where = str(path)
    try:
        document = yaml.safe_load(fsutil.read_bounded(where, MAX_CONFIG_BYTES).decode("utf-8"))
    except OSError as exc:
        problems.append(Problem(where, f"cannot read: {exc.strerror}"))
        return {}
    except fsutil.Unsuitable as exc:
        problems.append(Problem(where, str(exc)))
        return {}
    except yaml.YAMLError as exc:
        problems.append(Problem(where, f"is not valid YAML: {describe_yaml_error(exc)}"))
        return {}
    except UnicodeDecodeError as exc:
        problems.append(Problem(where, f"is not UTF-8 text (byte {exc.start})"))
        return {}
    if document is None:
        return {}
    if not isinstance(document, dict):
        problems.append(Problem(where, "expected a mapping of setting: value"))
        return {}
    values: dict[str, str] = {}
    for key, value in document.items():
        if key not in BY_KEY:
            known = ", ".join(sorted(BY_KEY))
            problems.append(Problem(f"{where}: {key}", f"unknown setting; known: {known}"))
            continue
        try:
            values[key] = _yaml_text(value, BY_KEY[key].many)
        except ValueError as exc:
            problems.append(Problem(f"{where}: {key}", str(exc)))
    return values


def _is_file(path: Path) -> bool:
    """Whether a file is there; False for a path that cannot exist (too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def package_config(env: Optional[BatchEnv]) -> Optional[Path]:
    """``node-agent.yaml`` at the top of the flamenco-worker package, beside the
    agent (used when it exists and ``NODE_AGENT_CONFIG`` is not set)."""
    worker = env.find_package("flamenco-worker") if env is not None else None
    return Path(worker.path, CONFIG_FILE_NAME) if worker is not None else None


def load_settings(
    environ: Mapping[str, str],
    command_line: Mapping[str, Optional[str]],
    package_config: Optional[Path],
) -> Settings:
    """Resolve every setting, or raise ``InvalidInput`` listing every bad one.

    ``command_line`` maps setting keys to the options' text (None when not given);
    ``package_config`` is the ``node-agent.yaml`` beside the agent, used when
    ``NODE_AGENT_CONFIG`` is not set and the file exists.
    """
    settings, problems = resolve_settings(environ, command_line, package_config)
    if problems:
        raise InvalidInput("invalid settings", problems)
    return settings


def resolve_settings(
    environ: Mapping[str, str],
    command_line: Mapping[str, Optional[str]],
    package_config: Optional[Path],
) -> tuple[Settings, tuple[Problem, ...]]:
    """Every setting resolved, and a problem for every bad one (arguments as for
    ``load_settings``). A bad setting takes its default (source ``default``; an
    unset or bad ``manager_url``, which has none, is empty), so that a plan made
    with these settings lists its own problems beside these: every problem at once."""
    problems: list[Problem] = []
    file_values: dict[str, str] = {}
    file_source = ""
    configured = environ.get(CONFIG_ENV)
    if configured:
        file_source = configured
        file_values = read_config_file(Path(configured), problems)
    elif package_config is not None and _is_file(package_config):
        file_source = str(package_config)
        file_values = read_config_file(package_config, problems)

    values: dict[str, Any] = {}
    sources: list[tuple[str, str]] = []
    for spec in SPECS:
        layered = (
            ("command line " + spec.flag, command_line.get(spec.key)),
            ("environment " + spec.env, environ.get(spec.env)),
            (file_source, file_values.get(spec.key)),
        )
        source, text = next(((s, t) for s, t in layered if t is not None), ("default", None))
        sources.append((spec.key, source))
        if text is None:
            values[spec.key] = spec.default
            continue
        try:
            values[spec.key] = spec.parse(text)
        except ValueError as exc:
            problems.append(
                Problem(f"{spec.key}={shown(spec.key, text)} (from {source})", str(exc))
            )
            values[spec.key] = spec.default
            sources[-1] = (spec.key, "default")
    if values["manager_url"] is None and not any(
        p.where.startswith("manager_url") for p in problems
    ):
        problems.append(
            Problem(
                "manager_url",
                "is not set; set FLAMENCO_MANAGER_URL in the pool's "
                "startTask.environmentSettings (Manager discovery does not work on Azure)",
            )
        )
    if values["manager_url"] is None:
        values["manager_url"] = ""
    return Settings(sources=tuple(sources), **values), tuple(problems)
