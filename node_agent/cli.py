"""The command line: ``node-agent COMMAND``. Thin: parse arguments, call, map errors to
exit codes. No traceback reaches the user for bad input."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Callable, Optional

from node_agent import __version__
from node_agent.env import BatchEnv
from node_agent.envfile import overlay
from node_agent.envview import env_summary, env_to_json
from node_agent.errors import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, InvalidInput, RuntimeFailure
from node_agent.log import get_logger, setup_logging

log = get_logger("cli")


def _environ(args: argparse.Namespace) -> dict[str, str]:
    return overlay(os.environ, args.env_file)


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
