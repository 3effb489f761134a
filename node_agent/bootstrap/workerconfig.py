"""Render the Flamenco Worker's config files. Pure: settings in, bytes out."""

from __future__ import annotations

import configparser
import posixpath
from collections.abc import Mapping
from typing import Optional

import yaml

V3_DEFAULT_TASK_TYPES = ("blender", "ffmpeg", "file-management", "misc")
V2_DEFAULT_TASK_TYPES = (
    "sleep",
    "blender-render",
    "file-management",
    "exr-merge",
    "video-encoding",
)
V2_CREDENTIAL_KEYS = ("worker_id", "worker_secret")

_HEADER = (
    "# Written by node-agent at every start of the node; changes here are lost.\n"
    "# Change the pool's start task settings (FLAMENCO_*) or node-agent.yaml instead.\n"
)


def render_v3(
    manager_url: str,
    task_types: Optional[tuple[str, ...]],
    restart_exit_code: int,
    worker_name: str,
    oom_score_adjust: Optional[int] = None,
) -> bytes:
    """``flamenco-worker.yaml`` for a v3 worker, with exactly the keys node-agent owns
    (``oom_score_adjust`` only when set). Credentials live elsewhere
    (``$FLAMENCO_HOME``) and are never written here."""
    document: dict[str, object] = {
        "manager_url": manager_url,
        "task_types": list(task_types or V3_DEFAULT_TASK_TYPES),
        "restart_exit_code": restart_exit_code,
        "worker_name": worker_name,
    }
    if oom_score_adjust is not None:
        document["oom_score_adjust"] = oom_score_adjust
    return (_HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)).encode()


# The v2 worker configures logging from its own config file and fails at start-up
# without these sections. Everything goes to stderr, which the supervisor forwards
# to the start task's stderr.txt.
_V2_LOGGING = """\
[loggers]
keys = root,flamenco_worker

[logger_root]
level = WARNING
handlers = console

[logger_flamenco_worker]
level = INFO
qualname = flamenco_worker
handlers = console
propagate = 0

[handlers]
keys = console

[handler_console]
class = logging.StreamHandler
formatter = default
args = (sys.stderr,)

[formatters]
keys = default

[formatter_default]
format = %(asctime)-15s %(levelname)8s %(name)s %(message)s
"""


def _ini_value(value: str) -> str:
    # The v2 worker reads this section with ConfigParser's %-interpolation.
    return value.replace("%", "%%")


def render_v2(
    manager_url: str,
    task_types: Optional[tuple[str, ...]],
    worker_dir: str,
    registration_secret: Optional[str],
    credentials: Mapping[str, str],
) -> bytes:
    """``flamenco-worker.cfg`` for a v2 worker: the worker section, with any
    ``worker_id``/``worker_secret`` carried over from the previous file, and the
    logging sections the worker needs."""
    settings = {
        "manager_url": manager_url,
        "task_types": " ".join(task_types or V2_DEFAULT_TASK_TYPES),
        "task_update_queue_db": posixpath.join(worker_dir, "flamenco-worker.db"),
        "subprocess_pid_file": posixpath.join(worker_dir, "flamenco-worker-subprocess.pid"),
    }
    if registration_secret is not None:
        settings["worker_registration_secret"] = registration_secret
    for key in V2_CREDENTIAL_KEYS:
        if credentials.get(key):
            settings[key] = credentials[key]
    lines = [_HEADER, "[flamenco-worker]\n"]
    lines.extend(f"{key} = {_ini_value(value)}\n" for key, value in settings.items())
    lines.append("\n")
    lines.append(_V2_LOGGING)
    return "".join(lines).encode()


def v2_credentials(text: str) -> dict[str, str]:
    """``worker_id``/``worker_secret`` from a v2 config file's text.

    Raises ``ValueError`` when the text is not INI: it may hold credentials, so the
    caller must not overwrite it."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    if not parser.has_section("flamenco-worker"):
        return {}
    section = parser["flamenco-worker"]
    return {
        key: section[key].replace("%%", "%")
        for key in V2_CREDENTIAL_KEYS
        if section.get(key, "").strip()
    }
