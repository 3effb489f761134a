"""The operator's choices: typed, validated, merged from four sources.

Precedence: command line > environment (the pool's ``startTask.environmentSettings``)
> YAML file (``NODE_AGENT_CONFIG``, else ``node-agent.yaml`` at the top of the
``flamenco-worker`` package, beside the agent) > defaults. Every bad value is
reported at once, naming the setting and where it came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import yaml

from node_agent.env import BatchEnv
from node_agent.errors import InvalidInput, Problem
from node_agent.redact import REDACTED, is_secret

CONFIG_FILE_NAME = "node-agent.yaml"
CONFIG_ENV = "NODE_AGENT_CONFIG"


class Flavour(Enum):
    """Which Flamenco Worker generation the package holds."""

    AUTO = "auto"
    V2 = "v2"
    V3 = "v3"


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved. ``sources`` says where each value came from."""

    manager_url: str
    task_types: Optional[tuple[str, ...]]  # None: the worker generation's defaults
    worker_name: Optional[str]  # None: derived from the node id
    flavour: Flavour
    restart_exit_code: int
    registration_secret: Optional[str]
    tools: tuple[str, ...]
    stop_grace: float
    backoff_initial: float
    backoff_cap: float
    backoff_reset_after: float
    restart_on_clean_exit: bool
    max_restarts: int
    timestamps: bool
    manager_wait_cap: float
    manager_wait_deadline: Optional[float]
    watch_events: bool
    ack_events: bool
    forget_worker: Optional[bool]  # None: on for Spot nodes
    imds_url: str
    sources: tuple[tuple[str, str], ...]

    def source(self, key: str) -> str:
        """Where a setting came from: ``command line``, ``environment VAR``, the YAML
        file's path, or ``default``."""
        return dict(self.sources)[key]

    def tools_explicit(self) -> bool:
        """Whether the operator chose the tools (a missing one is then an error)."""
        return self.source("tools") != "default"


# ---- value parsers: text in, typed value out, ValueError("what was expected") ----


def _url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return text.strip()


def _words(text: str) -> tuple[str, ...]:
    words = tuple(w for w in re.split(r"[\s,]+", text) if w)
    if not words:
        raise ValueError("expected at least one name (space or comma separated)")
    return words


def _name(text: str) -> str:
    if not text.strip() or "\n" in text:
        raise ValueError("expected a non-empty single-line name")
    return text.strip()


def _exit_code(text: str) -> int:
    try:
        code = int(text)
    except ValueError:
        raise ValueError("expected a whole number from 1 to 255") from None
    if not 0 < code < 256:
        raise ValueError(
            "expected a whole number from 1 to 255 (0 would make a "
            "Manager-requested restart look like a shutdown)"
        )
    return code


def _flavour(text: str) -> Flavour:
    try:
        return Flavour(text.strip().lower())
    except ValueError:
        raise ValueError("expected auto, v2 or v3") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 < value < 10**6:
        raise ValueError("expected a number of seconds above 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number (0 for no limit)") from None
    if value < 0:
        raise ValueError("expected a whole number (0 for no limit)")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError("expected true or false")


def _deadline(text: str) -> Optional[float]:
    if text.strip() in ("0", "never", "none"):
        return None
    return _seconds(text)


def _auto_boolean(text: str) -> Optional[bool]:
    return None if text.strip().lower() == "auto" else _boolean(text)


def _secret(text: str) -> str:
    if not text:
        raise ValueError("expected a non-empty secret")
    return text


@dataclass(frozen=True)
class _Spec:
    key: str  # attribute, YAML key
    env: str  # environment variable
    flag: str  # command-line option
    parse: Callable[[str], Any]
    default: Any
    help: str


SPECS = (
    _Spec(
        "manager_url",
        "FLAMENCO_MANAGER_URL",
        "--manager-url",
        _url,
        None,
        "the Flamenco Manager's URL (required)",
    ),
    _Spec(
        "task_types",
        "FLAMENCO_TASK_TYPES",
        "--task-types",
        _words,
        None,
        "task types the worker accepts (default: the worker's own)",
    ),
    _Spec(
        "worker_name",
        "FLAMENCO_WORKER_NAME",
        "--worker-name",
        _name,
        None,
        "the worker's name (default: <pool id>-<short node id>)",
    ),
    _Spec(
        "flavour",
        "FLAMENCO_WORKER_FLAVOUR",
        "--flavour",
        _flavour,
        Flavour.AUTO,
        "auto, v2 or v3 (auto: from the flamenco-worker package version)",
    ),
    _Spec(
        "restart_exit_code",
        "FLAMENCO_RESTART_EXIT_CODE",
        "--restart-exit-code",
        _exit_code,
        75,
        "exit code by which the worker asks to be restarted",
    ),
    _Spec(
        "registration_secret",
        "FLAMENCO_REGISTRATION_SECRET",
        "--registration-secret",
        _secret,
        None,
        "v2 only: the Manager's worker registration secret",
    ),
    _Spec(
        "tools",
        "NODE_AGENT_TOOLS",
        "--tools",
        _words,
        ("blender", "ffmpeg", "ffprobe"),
        "executables to link into the shared dir",
    ),
    _Spec(
        "stop_grace",
        "NODE_AGENT_STOP_GRACE",
        "--stop-grace",
        _seconds,
        30.0,
        "seconds between SIGTERM to the worker and SIGKILL to its whole tree",
    ),
    _Spec(
        "backoff_initial",
        "NODE_AGENT_BACKOFF_INITIAL",
        "--backoff-initial",
        _seconds,
        1.0,
        "seconds: the first restart delay window after a failure",
    ),
    _Spec(
        "backoff_cap",
        "NODE_AGENT_BACKOFF_CAP",
        "--backoff-cap",
        _seconds,
        60.0,
        "seconds: the largest restart delay window",
    ),
    _Spec(
        "backoff_reset_after",
        "NODE_AGENT_BACKOFF_RESET_AFTER",
        "--backoff-reset-after",
        _seconds,
        300.0,
        "seconds of worker uptime after which the backoff starts over",
    ),
    _Spec(
        "restart_on_clean_exit",
        "NODE_AGENT_RESTART_ON_CLEAN_EXIT",
        "--restart-on-clean-exit",
        _boolean,
        False,
        "v3: restart the worker even after the Manager asked it to shut down",
    ),
    _Spec(
        "max_restarts",
        "NODE_AGENT_MAX_RESTARTS",
        "--max-restarts",
        _count,
        0,
        "give up after this many failed restarts in a row (0: never)",
    ),
    _Spec(
        "timestamps",
        "NODE_AGENT_TIMESTAMPS",
        "--timestamps",
        _boolean,
        False,
        "prefix each forwarded worker line with a UTC timestamp",
    ),
    _Spec(
        "manager_wait_cap",
        "NODE_AGENT_MANAGER_WAIT_CAP",
        "--manager-wait-cap",
        _seconds,
        60.0,
        "seconds: the largest wait between attempts to reach the Manager",
    ),
    _Spec(
        "manager_wait_deadline",
        "NODE_AGENT_MANAGER_WAIT_DEADLINE",
        "--manager-wait-deadline",
        _deadline,
        None,
        "seconds to wait for the Manager before giving up (0: never give up)",
    ),
    _Spec(
        "watch_events",
        "NODE_AGENT_WATCH_EVENTS",
        "--watch-events",
        _boolean,
        True,
        "watch Azure Scheduled Events (preemption, reboots)",
    ),
    _Spec(
        "ack_events",
        "NODE_AGENT_ACK_EVENTS",
        "--ack-events",
        _boolean,
        True,
        "acknowledge an event once the worker has stopped for it",
    ),
    _Spec(
        "forget_worker",
        "NODE_AGENT_FORGET_WORKER",
        "--forget-worker",
        _auto_boolean,
        None,
        "v3: remove the worker from the Manager before preemption (auto: on Spot nodes)",
    ),
    _Spec(
        "imds_url",
        "NODE_AGENT_IMDS_URL",
        "--imds-url",
        _url,
        "http://169.254.169.254",
        "the Instance Metadata Service's base URL",
    ),
)
_BY_KEY = {spec.key: spec for spec in SPECS}


def _yaml_text(value: Any) -> str:
    """A YAML value as the text the parsers read (lists become space-separated)."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def read_config_file(path: Path, problems: list[Problem]) -> dict[str, str]:
    """The settings in a YAML file, as text; problems are appended, not raised."""
    where = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(Problem(where, f"cannot read: {exc.strerror}"))
        return {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(Problem(where, f"is not valid YAML: {exc}".replace("\n", " ")))
        return {}
    if document is None:
        return {}
    if not isinstance(document, dict):
        problems.append(Problem(where, "expected a mapping of setting: value"))
        return {}
    values: dict[str, str] = {}
    for key, value in document.items():
        if key not in _BY_KEY:
            known = ", ".join(sorted(_BY_KEY))
            problems.append(Problem(f"{where}: {key}", f"unknown setting; known: {known}"))
            continue
        values[key] = _yaml_text(value)
    return values


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
    problems: list[Problem] = []
    file_values: dict[str, str] = {}
    file_source = ""
    configured = environ.get(CONFIG_ENV)
    if configured:
        file_source = configured
        file_values = read_config_file(Path(configured), problems)
    elif package_config is not None and package_config.is_file():
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
            shown = REDACTED if is_secret(spec.key) else repr(text)
            problems.append(Problem(f"{spec.key}={shown} (from {source})", str(exc)))
            values[spec.key] = spec.default
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
    if problems:
        raise InvalidInput("invalid settings", problems)
    return Settings(sources=tuple(sources), **values)


@dataclass(frozen=True)
class FlavourChoice:
    """The worker generation to configure, why, and whether it is a guess."""

    flavour: Flavour
    reason: str
    guessed: bool


def resolve_flavour(chosen: Flavour, package_version: Optional[str]) -> FlavourChoice:
    """``auto`` follows the ``flamenco-worker`` package's major version: 2.x is v2,
    3.x and later v3; anything else falls back to v3 as a guess (callers warn)."""
    if chosen is not Flavour.AUTO:
        return FlavourChoice(chosen, "set by the operator", guessed=False)
    match = re.match(r"v?(\d+)", package_version or "")
    major = int(match.group(1)) if match else None
    if major is not None and major >= 2:
        flavour = Flavour.V2 if major == 2 else Flavour.V3
        return FlavourChoice(flavour, f"flamenco-worker package version {package_version}", False)
    return FlavourChoice(
        Flavour.V3,
        f"flamenco-worker package version {package_version or 'unknown'} does not say which "
        "worker generation it is; assuming v3 (set FLAMENCO_WORKER_FLAVOUR to be sure)",
        guessed=True,
    )
