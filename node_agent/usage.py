"""The command line's help: each setting's default and environment variable (from its
spec, never written twice), the exit codes, and one example per command."""

from __future__ import annotations

import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

from node_agent.common.errors import (
    EXIT_ALREADY_RUNNING,
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNHEALTHY,
    EXIT_USAGE,
)
from node_agent.config import values
from node_agent.config.specs import Spec


def install_fleet() -> str:
    """The command that installs ``node-agent fleet`` into the Python running this.

    From a checkout (README, "Installing the operator's tools"): node-agent is not
    on the package index, where anyone could take its name. The checkout this code
    runs from when it does (an editable install, the checkout's .venv), else the
    operator's own."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        source = str(checkout)
    else:
        source = "<your node-agent checkout>"
    command = f"{shlex.quote(sys.executable)} -m pip install {shlex.quote(source + '[fleet]')}"
    return f"{command} (README: Installing the operator's tools)"


EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_FAILURE: "the node could not be set up or kept running",
    EXIT_USAGE: "the command line is wrong",
    EXIT_INVALID: "invalid input: the environment, an env file, a setting or the plan "
    "(every problem listed)",
    EXIT_ALREADY_RUNNING: "run: another agent already supervises this node's worker",
    EXIT_NOT_RUNNING: "status: no agent is running on this node",
    EXIT_UNHEALTHY: "doctor: at least one check failed",
}

SETTINGS_TITLE = "settings"
SETTINGS_DESCRIPTION = textwrap.fill(
    "Each option overrides its environment variable (on Batch: the pool's "
    "startTask.environmentSettings), which overrides the node-agent.yaml key of the "
    "setting's name (with - as _). Each takes one value: settings of several values "
    "take them in one, and an option given twice counts once, the last one. See "
    "docs/settings.md.",
    width=78,
)

# What each kind of value looks like, by its parser.
_METAVARS: dict[Callable[[str], Any], str] = {
    values.url: "URL",
    values.words: "NAMES",
    values.tag_names: "NAMES",
    values.mount_names: "PATHS",
    values.name: "NAME",
    values.flavour: "auto|v2|v3",
    values.exit_code: "CODE",
    values.oom_score_adjust: "N|none",
    values.worker_args: "ARGS",
    values.secret: "SECRET",
    values.seconds: "SECONDS",
    values.deadline: "SECONDS",
    values.count: "N",
    values.backups: "N",
    values.size: "SIZE",
    values.cycles_device: "DEVICE",
}

# One example each, as an operator runs it; `python3 "$AZ_BATCH_APP_PACKAGE_..."`
# is how a node runs the agent the package brings.
ON_NODE = 'python3 "$AZ_BATCH_APP_PACKAGE_flamenco_worker/node-agent"'
EXAMPLES = {
    "": "node-agent env --env-file tests/fixtures/az_env/newer_spot.env",
    "env": "node-agent env --json --env-file tests/fixtures/az_env/newer_spot.env",
    "bootstrap": "node-agent bootstrap --dry-run --manager-url http://10.0.0.4:8080/ "
    "--env-file tests/fixtures/az_env/newer_spot.env",
    "run": f"{ON_NODE} run --manager-url http://10.0.0.4:8080/ --timestamps",
    "status": f"{ON_NODE} status --json",
    "doctor": f"{ON_NODE} doctor",
}


# Each command's exit codes; where a code means more for one command, what.
EXITS = {
    "": tuple(EXIT_MEANINGS),
    "env": (EXIT_OK, EXIT_USAGE, EXIT_INVALID),
    "bootstrap": (EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INVALID),
    "run": (EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INVALID, EXIT_ALREADY_RUNNING),
    "status": (EXIT_OK, EXIT_USAGE, EXIT_INVALID, EXIT_NOT_RUNNING),
    "doctor": (EXIT_OK, EXIT_USAGE, EXIT_INVALID, EXIT_UNHEALTHY),
}
_SPECIFIC = {
    ("env", EXIT_OK): "what run needs is there (warnings or not)",
    ("run", EXIT_OK): "supervision ended as it should: a stop signal stopped the worker, "
    "or a v3 worker exited 0 because the Manager asked it to shut down",
    ("run", EXIT_FAILURE): "gave up (max_restarts, manager_wait_deadline) or could not "
    "set up the node",
    ("status", EXIT_OK): "an agent is running",
    ("doctor", EXIT_OK): "no check failed",
}


def epilog(command: str) -> str:
    """The text after a command's options: its exit codes and its example."""
    lines = ["exit codes:"]
    for code in EXITS[command]:
        meaning = _SPECIFIC.get((command, code), EXIT_MEANINGS[code])
        lines.append(
            textwrap.fill(meaning, 78, initial_indent=f"  {code}  ", subsequent_indent="     ")
        )
    lines.extend(["", "example:", f"  {EXAMPLES[command]}"])
    return "\n".join(lines)


def metavar(spec: Spec) -> str:
    """What the option's value looks like."""
    if spec.switch:  # one form for every boolean: --x is true, --x false switches off
        return "auto|true|false" if spec.default is None else "true|false"
    return _METAVARS.get(spec.parse, "VALUE")


def setting_help(spec: Spec) -> str:
    """A setting's option help: what it is, its default and its variable."""
    text = f"{spec.help} (default: {spec.default_text()}; env {spec.env})"
    return text.replace("%", "%%")  # argparse formats help with %
