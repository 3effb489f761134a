"""``node-agent fleet COMMAND``: the command line of the operator's farm commands.
Thin: parse, look, decide (the pure modules), print or act. Exit codes as
``node_agent.common.errors``: 0 done, 1 Batch or the Manager failed or refused, 2 usage, 3
invalid input (account, bounds)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

from node_agent.common.errors import EXIT_FAILURE, EXIT_OK, InvalidInput, Problem, RuntimeFailure
from node_agent.common.log import LOGGER_NAME, get_logger, hide_secrets
from node_agent.common.redact import is_secret, printable
from node_agent.fleet.batch import BatchAccount, BatchFailure, BatchService
from node_agent.fleet.cleanup import heal, stale_workers
from node_agent.fleet.model import STATE_PATH
from node_agent.fleet.observe import snapshot
from node_agent.fleet.scaler import (
    MemoryUnusable,
    ScaleSettings,
    default_memory_file,
    load_memory,
    run_round,
)
from node_agent.fleet.scaling import Bounds
from node_agent.fleet.status import document, join, render
from node_agent.manager.api import ManagerApi, delete_worker

log = get_logger("fleet")
MANAGER_URL = "FLAMENCO_MANAGER_URL"
POOL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # Batch's rule for a pool id
MAX_INTERVAL = 86400.0  # seconds: --watch, --every


def _manager(args: argparse.Namespace, needed_for: Optional[str]) -> Optional[ManagerApi]:
    url = args.manager_url or os.environ.get(MANAGER_URL)
    if not url and needed_for:
        problem = Problem(MANAGER_URL, f"not set: {needed_for} (--manager-url or the variable)")
        raise InvalidInput(f"fleet {args.command} needs the Manager", [problem])
    return ManagerApi(url.rstrip("/") + "/") if url else None


def _repeat(every: Optional[float], work: Callable[[], bool]) -> int:
    """Do ``work`` once, or every ``every`` seconds until SIGTERM or SIGINT (then
    exit 0); a failed round in a loop is logged and the next one comes."""
    if every is None:
        return EXIT_OK if work() else EXIT_FAILURE
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        try:
            work()
        except BatchFailure as exc:
            log.error("%s; trying again in %g s", exc, every)
        stop.wait(every)
    return EXIT_OK


def _interval(option: str, value: Optional[float]) -> list[Problem]:
    """A time between rounds: finite, more than 0, at most a day (larger numbers
    overflow the wait)."""
    if value is None or (math.isfinite(value) and 0 < value <= MAX_INTERVAL):
        return []
    limit = f"{MAX_INTERVAL:g} (a day)"
    return [Problem(option, f"{value}: must be more than 0 seconds and at most {limit}")]


def _status_problems(args: argparse.Namespace) -> list[Problem]:
    return _interval("--watch", args.watch)


def cmd_status(args: argparse.Namespace, batch: BatchService) -> int:
    """Print the pool's nodes, joined with their state files and the Manager."""
    api = _manager(args, None)

    def show() -> bool:
        status = join(snapshot(batch, api, args.state_path))
        if args.json:
            print(json.dumps(document(status), sort_keys=True), flush=True)
        else:
            print(render(status) + ("\n" if args.watch else ""), flush=True)
        return True

    return _repeat(args.watch, show)


def cmd_prune(args: argparse.Namespace, batch: BatchService) -> int:
    """List (and with --apply remove) the Manager's stale entries of this pool."""
    api = _manager(args, "prune lists the Manager's workers")
    assert api is not None
    look = snapshot(batch, api, args.state_path, queue=False)
    if look.workers is None:
        raise RuntimeFailure(f"cannot prune: {look.manager_problem}")
    stale, failed = stale_workers(look), 0
    for entry in stale:
        worker = entry.worker
        what = f"worker {worker.id} {printable(worker.name)} ({worker.status or 'never signed on'})"
        if not entry.removable:
            print(f"leave {what}: {entry.reason}")
        elif not args.apply:
            print(f"would remove {what}: {entry.reason}")
        elif not delete_worker(api, worker.id, entry.reason):
            failed += 1
    removable = sum(s.removable for s in stale)
    done = "removed" if args.apply else "to remove (--apply removes them)"
    print(f"pool {look.pool.id}: {len(stale)} stale worker entries, {removable - failed} {done}")
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_heal(args: argparse.Namespace, batch: BatchService) -> int:
    """List (and with --apply reboot or reimage) the pool's failed nodes."""
    api = _manager(args, None)
    look = snapshot(batch, api, args.state_path)
    repairs, skipped = heal(look)
    failed = 0
    for skip in skipped:
        print(f"leave {skip.node_id}: {skip.reason}")
    for repair in repairs:
        if not args.apply:
            print(f"would {repair.action} {repair.node_id}: {repair.reason}")
            continue
        try:
            (batch.reboot if repair.action == "reboot" else batch.reimage)(repair.node_id)
            log.info("heal: %s %s: %s", repair.action, repair.node_id, repair.reason)
        except BatchFailure as exc:
            log.error("heal: %s", exc)
            failed += 1
    done = "repaired" if args.apply else "to repair (--apply repairs them)"
    print(
        f"pool {look.pool.id}: {len(repairs) + len(skipped)} failed node(s), "
        f"{len(repairs) - failed} {done}"
    )
    return EXIT_FAILURE if failed else EXIT_OK


def _memory_file(args: argparse.Namespace) -> Path:
    return args.memory or default_memory_file(args.pool)


def _scale_problems(args: argparse.Namespace) -> list[Problem]:
    problems = []
    if args.min < 0:
        problems.append(Problem("--min", f"{args.min}: must be 0 or more"))
    if args.max < max(args.min, 1):
        problems.append(Problem("--max", f"{args.max}: must be at least --min and 1"))
    if args.per_node < 1:
        problems.append(Problem("--per-node", f"{args.per_node}: must be 1 or more"))
    if not (math.isfinite(args.idle_minutes) and args.idle_minutes >= 0):
        problems.append(Problem("--idle-minutes", f"{args.idle_minutes}: must be 0 or more"))
    problems += _interval("--every", args.every)
    if args.memory is not None or POOL_ID.fullmatch(args.pool):  # the default names the pool
        try:
            load_memory(_memory_file(args))
        except MemoryUnusable as exc:
            problems.append(_memory_problem(exc))
    return problems


def _memory_problem(exc: MemoryUnusable) -> Problem:
    return Problem("--memory", f"{exc}; give a regular file, or a path where there is none yet")


def cmd_scale(args: argparse.Namespace, batch: BatchService) -> int:
    """Follow the queue with the pool's Spot nodes, within bounds."""
    bounds = Bounds(args.min, args.max, args.per_node, args.idle_minutes)
    api = _manager(args, "scale follows the Manager's queue")
    assert api is not None
    settings = ScaleSettings(bounds, args.state_path, _memory_file(args), args.apply)
    try:
        memory = load_memory(settings.memory_file)
    except MemoryUnusable as exc:  # changed since the check
        raise InvalidInput("invalid input for fleet scale", [_memory_problem(exc)]) from None

    def one_round() -> bool:
        nonlocal memory
        result = run_round(batch, api, settings, memory)
        memory = result.memory
        return result.ok

    return _repeat(args.every, one_round)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``node-agent fleet``."""
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
    parser = argparse.ArgumentParser(
        prog="node-agent fleet", description="The farm as a whole: a Batch pool and its Manager."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = commands.add_parser("status", parents=[common], help="one row per node")
    status.add_argument("--json", action="store_true", help="print JSON (shape: see README)")
    status.add_argument("--watch", type=float, metavar="S", help="print again every S seconds")
    status.set_defaults(func=cmd_status, check=_status_problems)
    for name, func, summary in (
        ("prune", cmd_prune, "the Manager's stale workers of this pool: list, or remove"),
        ("heal", cmd_heal, "failed nodes: list, or reboot/reimage them"),
    ):
        sub = commands.add_parser(name, parents=[common], help=summary)
        sub.add_argument("--apply", action="store_true", help="do it (default: only list)")
        sub.set_defaults(func=func, check=lambda args: [])
    scale = commands.add_parser("scale", parents=[common], help="Spot nodes follow the queue")
    scale.add_argument("--min", type=int, required=True, metavar="N", help="never fewer nodes")
    scale.add_argument("--max", type=int, required=True, metavar="M", help="never more nodes")
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
    scale.add_argument("--apply", action="store_true", help="do it (default: print the plan)")
    scale.add_argument(
        "--memory",
        type=Path,
        metavar="FILE",
        help="what rounds hand on (default: $XDG_STATE_HOME/node-agent/fleet-scale-POOL.json)",
    )
    scale.set_defaults(func=cmd_scale, check=_scale_problems)
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
    problems += args.check(args)
    try:
        account: Optional[BatchAccount] = BatchAccount.from_environ(os.environ, args.account_url)
    except InvalidInput as exc:
        problems += exc.problems
        account = None
    if problems or account is None:
        raise InvalidInput(f"invalid input for fleet {args.command}", problems)
    batch = BatchService(account.client(), args.pool)
    func: Callable[[argparse.Namespace, BatchService], int] = args.func
    return func(args, batch)
