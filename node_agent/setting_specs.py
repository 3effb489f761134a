"""Every setting: its YAML key, environment variable, command-line option, value
parser and default. The parsers are pure: text in, typed value out, or
``ValueError("what was expected")``."""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from node_agent.flavour import Flavour


def _control(text: str) -> bool:
    """Whether ``text`` holds a line break or another control character: in a value
    written into the worker's config file it could start a line of its own (a key
    the operator never set, a section)."""
    return any(c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029" for c in text)


def _url(text: str) -> str:
    url = text.strip()
    expected = "expected an http:// or https:// URL with a host"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{expected}, without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is no number or out of range
    except ValueError:
        raise ValueError(f"{expected} and, if any, a port from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(expected)
    if port == 0:
        raise ValueError(f"{expected} and, if any, a port from 1 to 65535")
    return url


def _words(text: str) -> tuple[str, ...]:
    words = tuple(w for w in re.split(r"[\s,]+", text) if w)
    if not words:
        raise ValueError("expected at least one name (space or comma separated)")
    if any(_control(w) for w in words):
        raise ValueError("expected names without control characters")
    return words


def _name(text: str) -> str:
    if not text.strip() or _control(text):
        raise ValueError("expected a non-empty single-line name without control characters")
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


def _tag_names(text: str) -> tuple[str, ...]:
    # Commas (or one a line), not spaces: tag names such as "Cycles GPU" have spaces.
    return tuple(dict.fromkeys(n.strip() for n in re.split(r"[,\n]", text) if n.strip()))


def _oom_score_adjust(text: str) -> Optional[int]:
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number from 0 to 1000, or none") from None
    if not 0 <= value <= 1000:
        raise ValueError(
            "expected a whole number from 0 to 1000, or none (a negative value needs a "
            "privilege a non-admin start task does not have)"
        )
    return value


# Flags whose job node-agent does: passing them would break supervision.
_OWNED_FLAGS = {
    "manager": "set manager_url instead",
    "restart-exit-code": "set restart_exit_code instead",
    "version": "it makes the worker exit at once",
    "flush": "it makes the worker exit at once",
    "find-manager": "it makes the worker exit at once",
}


def _worker_args(text: str) -> tuple[str, ...]:
    # A YAML list arrives one item a line; other text is split as a shell would.
    try:
        args = text.splitlines() if "\n" in text else shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"expected arguments as a shell would split them ({exc})") from None
    if "\x00" in text:
        raise ValueError("expected arguments without NUL characters")
    for arg in args:
        name = arg.lstrip("-").partition("=")[0]
        if arg.startswith("-") and name in _OWNED_FLAGS:
            raise ValueError(f"{arg}: node-agent passes no such flag for you: {_OWNED_FLAGS[name]}")
    return tuple(a for a in args if a)


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


def _mount_names(text: str) -> tuple[str, ...]:
    names = tuple(w for w in re.split(r"[\s,]+", text) if w)
    for name in names:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(
                "expected paths relative to AZ_BATCH_NODE_MOUNTS_DIR (the pool's "
                "relativeMountPath), without '..'; empty for none"
            )
    return tuple(posixpath.normpath(name) for name in names)


def _secret(text: str) -> str:
    if not text or _control(text):
        raise ValueError("expected a non-empty single-line secret without control characters")
    return text


@dataclass(frozen=True)
class Spec:
    key: str  # attribute, YAML key
    env: str  # environment variable
    flag: str  # command-line option
    parse: Callable[[str], Any]
    default: Any
    help: str
    many: bool = False  # takes a list (a YAML list, or names separated on one line)

    @property
    def switch(self) -> bool:
        """Whether it is a boolean: as an option, alone it means true."""
        return self.parse in (_boolean, _auto_boolean)


SPECS = (
    Spec(
        "manager_url",
        "FLAMENCO_MANAGER_URL",
        "--manager-url",
        _url,
        None,
        "the Flamenco Manager's URL (required)",
    ),
    Spec(
        "task_types",
        "FLAMENCO_TASK_TYPES",
        "--task-types",
        _words,
        None,
        "task types the worker accepts (default: the worker's own)",
        many=True,
    ),
    Spec(
        "worker_name",
        "FLAMENCO_WORKER_NAME",
        "--worker-name",
        _name,
        None,
        "the worker's name (default: <pool id>-<short node id>)",
    ),
    Spec(
        "flavour",
        "FLAMENCO_WORKER_FLAVOUR",
        "--flavour",
        _flavour,
        Flavour.AUTO,
        "auto, v2 or v3 (auto: from the flamenco-worker package version)",
    ),
    Spec(
        "restart_exit_code",
        "FLAMENCO_RESTART_EXIT_CODE",
        "--restart-exit-code",
        _exit_code,
        75,
        "exit code by which the worker asks to be restarted",
    ),
    Spec(
        "worker_tags",
        "FLAMENCO_WORKER_TAGS",
        "--worker-tags",
        _tag_names,
        (),
        "v3: names of Manager tags to give every new registration (comma separated)",
        many=True,
    ),
    Spec(
        "oom_score_adjust",
        "FLAMENCO_OOM_SCORE_ADJUST",
        "--oom-score-adjust",
        _oom_score_adjust,
        500,
        "v3: oom_score_adj of Blender and ffmpeg (0-1000, or none)",
    ),
    Spec(
        "worker_args",
        "FLAMENCO_WORKER_ARGS",
        "--worker-args",
        _worker_args,
        (),
        "extra command-line arguments for the worker, e.g. -debug",
        many=True,
    ),
    Spec(
        "registration_secret",
        "FLAMENCO_REGISTRATION_SECRET",
        "--registration-secret",
        _secret,
        None,
        "v2 only: the Manager's worker registration secret",
    ),
    Spec(
        "tools",
        "NODE_AGENT_TOOLS",
        "--tools",
        _words,
        ("blender", "ffmpeg", "ffprobe"),
        "executables to link into the shared dir",
        many=True,
    ),
    Spec(
        "stop_grace",
        "NODE_AGENT_STOP_GRACE",
        "--stop-grace",
        _seconds,
        30.0,
        "seconds between SIGTERM to the worker and SIGKILL to its whole tree",
    ),
    Spec(
        "backoff_initial",
        "NODE_AGENT_BACKOFF_INITIAL",
        "--backoff-initial",
        _seconds,
        1.0,
        "seconds: the first restart delay window after a failure",
    ),
    Spec(
        "backoff_cap",
        "NODE_AGENT_BACKOFF_CAP",
        "--backoff-cap",
        _seconds,
        60.0,
        "seconds: the largest restart delay window",
    ),
    Spec(
        "backoff_reset_after",
        "NODE_AGENT_BACKOFF_RESET_AFTER",
        "--backoff-reset-after",
        _seconds,
        300.0,
        "seconds of worker uptime after which the backoff starts over",
    ),
    Spec(
        "restart_on_clean_exit",
        "NODE_AGENT_RESTART_ON_CLEAN_EXIT",
        "--restart-on-clean-exit",
        _boolean,
        False,
        "v3: restart the worker even after the Manager asked it to shut down",
    ),
    Spec(
        "min_uptime",
        "NODE_AGENT_MIN_UPTIME",
        "--min-uptime",
        _seconds,
        10.0,
        "seconds a worker must run for a requested restart to be done at once",
    ),
    Spec(
        "max_restarts",
        "NODE_AGENT_MAX_RESTARTS",
        "--max-restarts",
        _count,
        0,
        "give up after this many failed restarts in a row (0: never)",
    ),
    Spec(
        "timestamps",
        "NODE_AGENT_TIMESTAMPS",
        "--timestamps",
        _boolean,
        False,
        "prefix each forwarded worker line with a UTC timestamp",
    ),
    Spec(
        "manager_wait_cap",
        "NODE_AGENT_MANAGER_WAIT_CAP",
        "--manager-wait-cap",
        _seconds,
        60.0,
        "seconds: the largest wait between attempts to reach the Manager",
    ),
    Spec(
        "manager_wait_deadline",
        "NODE_AGENT_MANAGER_WAIT_DEADLINE",
        "--manager-wait-deadline",
        _deadline,
        None,
        "seconds to wait for the Manager before giving up (0: never give up)",
    ),
    Spec(
        "watch_events",
        "NODE_AGENT_WATCH_EVENTS",
        "--watch-events",
        _boolean,
        True,
        "watch Azure Scheduled Events (preemption, reboots)",
    ),
    Spec(
        "ack_events",
        "NODE_AGENT_ACK_EVENTS",
        "--ack-events",
        _boolean,
        True,
        "acknowledge an event once the worker has stopped for it",
    ),
    Spec(
        "forget_worker",
        "NODE_AGENT_FORGET_WORKER",
        "--forget-worker",
        _auto_boolean,
        None,
        "v3: remove the worker from the Manager before preemption (auto: on Spot nodes)",
    ),
    Spec(
        "imds_url",
        "NODE_AGENT_IMDS_URL",
        "--imds-url",
        _url,
        "http://169.254.169.254",
        "the Instance Metadata Service's base URL",
    ),
    Spec(
        "storage_mounts",
        "NODE_AGENT_STORAGE_MOUNTS",
        "--storage-mounts",
        _mount_names,
        (),
        "mounts the worker needs, relative to AZ_BATCH_NODE_MOUNTS_DIR (default: none)",
        many=True,
    ),
    Spec(
        "storage_wait_cap",
        "NODE_AGENT_STORAGE_WAIT_CAP",
        "--storage-wait-cap",
        _seconds,
        60.0,
        "seconds: the largest wait between looks at missing shared storage",
    ),
    Spec(
        "install_system_packages",
        "NODE_AGENT_INSTALL_SYSTEM_PACKAGES",
        "--install-system-packages",
        _boolean,
        False,
        "admin start tasks only: apt-get install the system libraries the tools lack",
    ),
)


BY_KEY = {spec.key: spec for spec in SPECS}
