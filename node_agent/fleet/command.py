"""``node-agent fleet COMMAND``: the command line of the operator's farm commands.
Thin: parse, check every problem at once, then hand over to the command
(``actions``, ``rolling``). Exit codes as ``node_agent.common.errors``: 0 done, 1
Batch or the Manager failed or refused, 2 usage, 3 invalid input, 6 (status) some
node needs attention, 128+N stopped by signal N."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

from node_agent.common.errors import InvalidInput, Problem
from node_agent.common.log import LOGGER_NAME, get_logger, hide_secrets
from node_agent.common.redact import is_secret
from node_agent.fleet import actions, rolling
from node_agent.fleet.batch import BatchAccount, BatchService, Limits
from node_agent.fleet.helptext import EPILOGS, SCALE_MIN
from node_agent.fleet.looping import Stopped, stop_on_signals
from node_agent.fleet.model import STATE_PATH
from node_agent.fleet.roller import RollSettings, RollUnusable, default_roll_file, load_roll
from node_agent.fleet.roller import parse_packages as _parse_packages
from node_agent.fleet.scaler import MemoryUnusable, ScaleSettings, default_memory_file, load_memory
from node_agent.fleet.scaling import Bounds
from node_agent.manager.api import ManagerApi

log = get_logger("fleet")
MANAGER_URL = "FLAMENCO_MANAGER_URL"
POOL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # Batch's rule for a pool id
MAX_INTERVAL = 86400.0  # seconds: --watch, --every, --wait
MAX_TIMEOUT = 600.0  # seconds: --timeout
# Commands that cannot work without the Manager, and why they need it.
NEEDS_MANAGER = {
    "prune": "prune lists the Manager's workers",
    "scale": "scale follows the Manager's queue",
    "roll": "roll winds workers down through the Manager",
}


def _seconds(option: str, value: Optional[float], most: float = MAX_INTERVAL) -> list[Problem]:
    """A time in seconds: finite, more than 0, at most ``most`` (larger numbers
    overflow the waits)."""
    if value is None or (math.isfinite(value) and 0 < value <= most):
        return []
    limit = f"{most:g}" + (" (a day)" if most == MAX_INTERVAL else "")
    return [Problem(option, f"{value}: must be more than 0 seconds and at most {limit}")]


def _memory_file(args: argparse.Namespace) -> Path:
    return args.memory or default_memory_file(args.pool)


def _checks(args: argparse.Namespace) -> list[Problem]:
    """Every problem of the command line that the command itself would meet."""
    problems = _seconds("--timeout", args.timeout, MAX_TIMEOUT)
    command = args.command
    if command == "status":
        problems += _seconds("--watch", args.watch)
    elif command == "heal":
        problems += _seconds("--wait", args.wait)
    elif command == "scale":
        if args.min < 0:
            problems.append(Problem("--min", f"{args.min}: must be 0 or more"))
        if args.max < max(args.min, 1):
            problems.append(Problem("--max", f"{args.max}: must be at least --min and 1"))
        if args.per_node < 1:
            problems.append(Problem("--per-node", f"{args.per_node}: must be 1 or more"))
        if not (math.isfinite(args.idle_minutes) and args.idle_minutes >= 0):
            problems.append(Problem("--idle-minutes", f"{args.idle_minutes}: must be 0 or more"))
        problems += _seconds("--every", args.every)
        if args.memory is not None or POOL_ID.fullmatch(args.pool):  # the default names it
            try:
                load_memory(_memory_file(args))
            except MemoryUnusable as exc:
                problems.append(_memory_problem(exc))
    elif command == "roll":
        if args.at_once < 1:
            problems.append(Problem("--at-once", f"{args.at_once}: must be 1 or more"))
        problems += _seconds("--every", args.every)
        minutes = args.back_within
        if not (math.isfinite(minutes) and 0 < minutes <= MAX_INTERVAL / 60):
            limit = f"{MAX_INTERVAL / 60:g} (a day)"
            problems.append(
                Problem("--back-within", f"{minutes}: must be more than 0 minutes, at most {limit}")
            )
        problems += _parse_packages(args.package)[1]
        if args.roll_file is None and POOL_ID.fullmatch(args.pool):
            args.roll_file = default_roll_file(args.pool)
        if args.roll_file is not None:
            try:
                load_roll(args.roll_file)
            except RollUnusable as exc:
                problems.append(Problem("--roll-file", str(exc)))
    return problems


def _memory_problem(exc: MemoryUnusable) -> Problem:
    return Problem("--memory", f"{exc}; give a regular file, or a path where there is none yet")


def _run(args: argparse.Namespace, batch: BatchService, api: Optional[ManagerApi]) -> int:
    command = args.command
    if command == "status":
        return actions.cmd_status(args, batch, api)
    if command == "prune":
        return actions.cmd_prune(args, batch, api)
    if command == "heal":
        return actions.cmd_heal(args, batch, api)
    if command == "scale":
        bounds = Bounds(args.min, args.max, args.per_node, args.idle_minutes)
        settings = ScaleSettings(bounds, args.state_path, _memory_file(args), args.apply)
        try:
            memory = load_memory(settings.memory_file)
        except MemoryUnusable as exc:  # changed since the check
            raise InvalidInput("invalid input for fleet scale", [_memory_problem(exc)]) from None
        return actions.cmd_scale(args, batch, api, settings, memory)
    roll = RollSettings(args.state_path, args.at_once, args.back_within * 60, args.apply)
    try:
        memory_ = load_roll(args.roll_file)
    except RollUnusable as exc:  # changed since the check
        problem = Problem("--roll-file", str(exc))
        raise InvalidInput("invalid input for fleet roll", [problem]) from None
    return rolling.cmd_roll(args, batch, api, roll, memory_)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("the farm")
    where.add_argument("--pool", required=True, help="the Batch pool's id")
    where.add_argument(
        "--account-url",
        metavar="URL",
        help="the Batch account URL (default: $AZURE_BATCH_ENDPOINT); the key comes from "
        "$AZURE_BATCH_ACCESS_KEY, else Microsoft Entra ID (DefaultAzureCredential)",
    )
    where.add_argument(
        "--manager-url", metavar="URL", help=f"the Flamenco Manager (default: ${MANAGER_URL})"
    )
    where.add_argument(
        "--state-path",
        default=STATE_PATH,
        metavar="PATH",
        help=f"the agent's state file on the nodes, relative to the node root ({STATE_PATH})",
    )
    where.add_argument(
        "--timeout",
        type=float,
        default=Limits.timeout,
        metavar="S",
        help=f"seconds one call to Batch or the Manager may stay silent ({Limits.timeout:g}; "
        f"Batch calls are tried {Limits.retries} more times)",
    )
    return common


def _subcommand(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    summary: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    return commands.add_parser(  # type: ignore[no-any-return]
        name,
        parents=[common],
        help=summary,
        description=summary,
        epilog=EPILOGS[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``node-agent fleet``."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="node-agent fleet",
        description="The farm as a whole: a Batch pool and its Manager.",
        epilog=EPILOGS["fleet"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = _subcommand(commands, "status", "one row per node, and a summary", common)
    status.add_argument("--json", action="store_true", help="print JSON (docs/fleet.md)")
    status.add_argument("--wide", action="store_true", help="whole node ids")
    status.add_argument("--watch", type=float, metavar="S", help="print again every S seconds")
    prune = _subcommand(commands, "prune", "the Manager's stale workers: list, or remove", common)
    heal = _subcommand(commands, "heal", "failed nodes: list, or reboot or replace them", common)
    heal.add_argument(
        "--wait",
        type=float,
        default=900.0,
        metavar="S",
        help="how long to wait for a resizing pool to be steady before removing or resizing (900)",
    )
    heal.add_argument(
        "--no-replace",
        dest="replace",
        action="store_false",
        help="remove unusable nodes without resizing the pool back (when fleet scale runs)",
    )
    scale = _subcommand(commands, "scale", "Spot nodes follow the queue", common)
    scale.add_argument("--min", type=int, required=True, metavar="N", help=SCALE_MIN)
    scale.add_argument(
        "--max", type=int, required=True, metavar="M", help="never more Spot nodes than M"
    )
    scale.add_argument("--per-node", type=int, default=1, metavar="K", help="tasks per node (1)")
    scale.add_argument(
        "--idle-minutes",
        type=float,
        default=10.0,
        metavar="T",
        help="shrink only after this long with too many nodes (10)",
    )
    repeat = scale.add_mutually_exclusive_group()
    repeat.add_argument("--once", action="store_true", help="one round (the default)")
    repeat.add_argument("--every", type=float, metavar="S", help="a round every S seconds")
    scale.add_argument(
        "--memory",
        type=Path,
        metavar="FILE",
        help="what rounds hand on (default: $XDG_STATE_HOME/node-agent/fleet-scale-POOL.json)",
    )
    roll = _subcommand(
        commands, "roll", "reboot every node onto the pool's packages, a few at a time", common
    )
    roll.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="ID[=VERSION]",
        help="first set the pool's reference to this application to VERSION (without: "
        "its default version); repeatable",
    )
    roll.add_argument(
        "--at-once", type=int, default=1, metavar="N", help="nodes out of service at a time (1)"
    )
    roll.add_argument(
        "--back-within",
        type=float,
        default=30.0,
        metavar="MIN",
        help="minutes a rebooted node has to come back with its worker, else the roll stops (30)",
    )
    roll.add_argument(
        "--every", type=float, default=15.0, metavar="S", help="seconds between rounds (15)"
    )
    roll.add_argument(
        "--roll-file",
        type=Path,
        metavar="FILE",
        help="the roll under way (default: $XDG_STATE_HOME/node-agent/fleet-roll-POOL.json)",
    )
    for sub in (prune, heal, scale, roll):
        sub.add_argument("--apply", action="store_true", help="do it (default: print the plan)")
        sub.add_argument("--json", action="store_true", help="print JSON (docs/fleet.md)")
    return parser


def _without_traceback(record: logging.LogRecord) -> bool:
    record.exc_info, record.exc_text = None, None
    return True


def _sdk_logging(verbose: bool) -> None:
    """The SDK's own log lines go through node-agent's redacting formatter with -v
    (without tracebacks: it logs one for an error body it will not parse), and
    nowhere otherwise: its failures reach the operator as ``BatchFailure`` messages."""
    sdk = logging.getLogger("azure")
    handler: logging.Handler = logging.NullHandler()
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.getLogger(LOGGER_NAME).handlers[0].formatter)
        handler.addFilter(_without_traceback)
    sdk.handlers[:] = [handler]
    sdk.setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    sdk.propagate = False


def main(argv: Sequence[str], verbose: bool = False) -> int:
    """Run one fleet command; its exit code."""
    args = build_parser().parse_args(argv)
    _sdk_logging(verbose)
    # A safety net under the rule that no message is built with a secret in it:
    # AZURE_CLIENT_SECRET and the like, for Microsoft Entra ID sign-in.
    hide_secrets(v for k, v in os.environ.items() if is_secret(k))
    # Every problem of the command line and the account at once, before anything is done.
    problems: list[Problem] = []
    if not POOL_ID.fullmatch(args.pool):
        problems.append(
            Problem(
                "--pool",
                f"{args.pool!r}: expected a Batch pool id (1 to 64 letters, digits, - and _)",
            )
        )
    problems += _checks(args)
    manager_url = (args.manager_url or os.environ.get(MANAGER_URL) or "").strip()
    if not manager_url and args.command in NEEDS_MANAGER:
        why = f"not set: {NEEDS_MANAGER[args.command]} (--manager-url or the variable)"
        problems.append(Problem(MANAGER_URL, why))
    try:
        account: Optional[BatchAccount] = BatchAccount.from_environ(os.environ, args.account_url)
    except InvalidInput as exc:
        problems += exc.problems
        account = None
    if problems or account is None:
        raise InvalidInput(f"invalid input for fleet {args.command}", problems)
    limits = Limits(args.timeout)
    batch = BatchService(account.client(limits), args.pool, limits)
    api = ManagerApi(manager_url.rstrip("/") + "/", timeout=args.timeout) if manager_url else None
    stop_on_signals()
    run: Callable[[argparse.Namespace, BatchService, Optional[ManagerApi]], int] = _run
    try:
        return run(args, batch, api)
    except Stopped as exc:
        log.info("fleet %s: stopped by %s", args.command, exc)
        return 128 + exc.signum
