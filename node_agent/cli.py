"""The command line: ``node-agent COMMAND``. Thin: parse arguments, call, map errors to
exit codes. No traceback reaches the user for bad input."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

from node_agent import __version__, bootstrap
from node_agent.env import BatchEnv
from node_agent.envfile import overlay
from node_agent.envview import env_summary, env_to_json
from node_agent.errors import (
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_OK,
    InvalidInput,
    Problem,
    RuntimeFailure,
)
from node_agent.log import get_logger, setup_logging
from node_agent.settings import CONFIG_FILE_NAME, SPECS, Settings, load_settings

log = get_logger("cli")


def _environ(args: argparse.Namespace) -> dict[str, str]:
    return overlay(os.environ, args.env_file)


def _prepare(args: argparse.Namespace) -> tuple[BatchEnv, Settings]:
    """The environment and the settings, each validated (problems of both at once)."""
    environ = _environ(args)
    problems: list[Problem] = []
    env: Optional[BatchEnv] = None
    try:
        env = BatchEnv.from_environ(environ)
    except InvalidInput as exc:
        problems.extend(exc.problems)
    worker = env.find_package("flamenco-worker") if env else None
    package_config = Path(worker.path, CONFIG_FILE_NAME) if worker else None
    command_line = {spec.key: getattr(args, spec.key) for spec in SPECS}
    try:
        settings = load_settings(environ, command_line, package_config)
    except InvalidInput as exc:
        problems.extend(exc.problems)
    if problems or env is None:
        raise InvalidInput("invalid environment or settings", problems)
    return env, settings


def plan_lines(plan: bootstrap.Plan) -> list[str]:
    """The plan as the operator reads it."""
    lines = [
        f"worker: {plan.flavour.flavour.value} ({plan.flavour.reason}), "
        f"name {plan.worker_name!r}, config {plan.config_path}",
    ]
    lines.extend(f"  {action.describe()}" for action in plan.actions)
    lines.extend(f"note: {note}" for note in plan.notes)
    return lines


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Link the tools and write the worker config; print the plan and the changes."""
    env, settings = _prepare(args)
    plan = bootstrap.plan(env, settings, bootstrap.survey(env, settings))
    for line in plan_lines(plan):
        print(line)
    if args.dry_run:
        print(f"dry run: {len(plan.changes)} change(s) planned, none made")
        return EXIT_OK
    done = bootstrap.apply(plan)
    if done:
        print(f"changed {len(done)}: " + ", ".join(a.path for a in done))
    else:
        print("nothing to change: the node is already set up")
    return EXIT_OK


def cmd_env(args: argparse.Namespace) -> int:
    """Print the parsed environment."""
    env = BatchEnv.from_environ(_environ(args))
    if args.json:
        print(json.dumps(env_to_json(env), indent=2, sort_keys=True))
    else:
        print(env_summary(env))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="node-agent",
        description="Turn an Azure Batch node into a supervised Flamenco worker.",
    )
    parser.add_argument("--version", action="version", version=f"node-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        metavar="FILE",
        help="read KEY=VALUE lines from FILE over the process environment (the file wins)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    env = commands.add_parser("env", parents=[common], help="show the parsed Batch environment")
    env.add_argument("--json", action="store_true", help="print JSON (shape: see README)")
    env.set_defaults(func=cmd_env)

    settings = argparse.ArgumentParser(add_help=False)
    group = settings.add_argument_group(
        "settings (override the environment and node-agent.yaml; see README)"
    )
    for spec in SPECS:
        group.add_argument(spec.flag, dest=spec.key, metavar="VALUE", help=spec.help)

    boot = commands.add_parser(
        "bootstrap",
        parents=[common, settings],
        help="link blender/ffmpeg onto PATH and write the worker config",
    )
    boot.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    boot.set_defaults(func=cmd_bootstrap)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; return its exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InvalidInput as exc:
        print(f"node-agent: ERROR: {exc.render()}", file=sys.stderr)
        return EXIT_INVALID
    except RuntimeFailure as exc:
        print(f"node-agent: ERROR: {exc}", file=sys.stderr)
        return EXIT_FAILURE
