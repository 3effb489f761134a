"""The command line: ``node-agent COMMAND``. Thin: parse arguments, call, map errors to
exit codes. No traceback reaches the user for bad input."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Optional

# Only what parsing the command line needs, at the top: `--version` and `--help`
# answer without loading the agent (requests, psutil); each command imports its own.
from node_agent import __version__, usage
from node_agent.common.errors import (
    EXIT_ALREADY_RUNNING,
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNHEALTHY,
    InvalidInput,
    Problem,
    RuntimeFailure,
    unexpected,
)
from node_agent.common.log import get_logger, hide_secrets, log_lines, scrub, setup_logging
from node_agent.common.redact import REDACTED, is_secret, url_password
from node_agent.config.specs import SPECS
from node_agent.runtime.lock import AlreadyRunning

if TYPE_CHECKING:
    from node_agent import bootstrap
    from node_agent.config.settings import Settings
    from node_agent.node.env import BatchEnv
    from node_agent.runtime.state import AgentState

log = get_logger("cli")


def _print(text: str) -> None:
    """Print a line of output, scrubbed of every secret and URL password."""
    print(scrub(text))


def _environ(args: argparse.Namespace) -> dict[str, str]:
    from node_agent.node.envfile import overlay  # noqa: PLC0415

    environ = overlay(os.environ, args.env_file)
    hide_secrets(v for k, v in environ.items() if is_secret(k))
    hide_secrets(filter(None, map(url_password, environ.values())))
    return environ


def _prepare(args: argparse.Namespace) -> tuple[dict[str, str], BatchEnv, Settings]:
    """The merged environment, the Batch model and the settings, each validated
    (the problems of both at once)."""
    from node_agent.config.settings import package_config, resolve_settings  # noqa: PLC0415
    from node_agent.node.env import BatchEnv  # noqa: PLC0415

    environ = _environ(args)
    problems: list[Problem] = []
    env: Optional[BatchEnv] = None
    try:
        env = BatchEnv.from_environ(environ)
    except InvalidInput as exc:
        problems.extend(exc.problems)
    command_line = {spec.key: getattr(args, spec.key) for spec in SPECS}
    hide_secrets(filter(None, map(url_password, filter(None, command_line.values()))))
    settings, setting_problems = resolve_settings(environ, command_line, package_config(env))
    problems.extend(setting_problems)
    if problems and env is not None:
        problems.extend(_plan_problems(env, settings))
    if problems or env is None:
        raise InvalidInput("invalid environment, settings or plan", problems)
    for warning in env.warnings:
        log.warning("environment: %s (node-agent goes on without it)", warning)
    return environ, env, settings


def _plan(env: BatchEnv, settings: Settings) -> bootstrap.Plan:
    from node_agent import bootstrap  # noqa: PLC0415
    from node_agent.bootstrap.survey import survey  # noqa: PLC0415

    return bootstrap.plan(env, settings, survey(env, settings))


def _plan_problems(env: BatchEnv, settings: Settings) -> tuple[Problem, ...]:
    """The plan's own problems, planned with the settings that failed at their
    defaults, to be listed with theirs: the operator fixes both in one round."""
    try:
        _plan(env, settings)
    except InvalidInput as exc:
        return exc.problems
    except RuntimeFailure:  # a node that cannot be surveyed is said once the input is right
        return ()
    return ()


def plan_lines(plan: bootstrap.Plan) -> list[str]:
    """The plan as the operator reads it."""
    lines = [
        f"worker: {plan.flavour.flavour.value} ({plan.flavour.reason}), "
        f"name {plan.worker_name!r}, config {plan.config_path}",
    ]
    lines.extend(f"  {action.describe()}" for action in plan.actions)
    lines.extend(f"note: {note}" for note in plan.notes)
    if plan.blocked:
        lines.append(f"cannot be applied: {plan.blocked}")
    return lines


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Link the tools and write the worker config; print the plan and the changes."""
    from node_agent import bootstrap  # noqa: PLC0415
    from node_agent.bootstrap.syspkgs import ensure_system_packages  # noqa: PLC0415

    environ, env, settings = _prepare(args)
    if not args.dry_run:
        ensure_system_packages(env, settings, environ)
    plan = _plan(env, settings)
    for line in plan_lines(plan):
        _print(line)
    if args.dry_run:
        _print(f"dry run: {len(plan.changes)} change(s) planned, none made")
        return EXIT_OK
    done = bootstrap.apply(plan)
    if done:
        _print(f"changed {len(done)}: " + ", ".join(a.path for a in done))
    else:
        _print("nothing to change: the node is already set up")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Bootstrap the node, then supervise the worker for the node's whole life."""
    from node_agent.runtime import stopsignals  # noqa: PLC0415

    early_stops = stopsignals.hold()  # first: a stop is never a silent death
    from node_agent import agent  # noqa: PLC0415
    from node_agent.bootstrap.syspkgs import ensure_system_packages  # noqa: PLC0415
    from node_agent.common import logfiles  # noqa: PLC0415

    environ, env, settings = _prepare(args)
    log_lines(log, logging.INFO, logfiles.configure(settings.log_max_size, settings.log_backups))
    ensure_system_packages(env, settings, environ)
    plan = _plan(env, settings)
    for line in plan_lines(plan):
        log.info("%s", line.strip())
    return agent.run(environ, env, settings, plan, early_stops)


def _status_document(**fields: object) -> str:
    from node_agent.runtime.state import STATE_SCHEMA  # noqa: PLC0415

    return json.dumps({"schema": STATE_SCHEMA, **fields}, indent=2, sort_keys=True)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the agent's state file and whether its processes are alive."""
    from node_agent.node.env import BatchEnv  # noqa: PLC0415
    from node_agent.node.layout import Layout  # noqa: PLC0415
    from node_agent.runtime.state import (  # noqa: PLC0415
        STATE_FILE,
        StateProblem,
        process_alive,
        read_state,
    )

    env = BatchEnv.from_environ(_environ(args))
    path = os.path.join(Layout.for_env(env).agent_dir, STATE_FILE)
    dead = {"agent_alive": False, "worker_alive": False, "state_file": path}
    try:
        state = read_state(path)
    except StateProblem as exc:
        if args.json:
            _print(_status_document(**dead, state_problem=str(exc)))
        else:
            _print(
                f"the state file {path} {exc}; node-agent rewrites it at its next start "
                "(whether an agent runs now cannot be told from it)"
            )
        return EXIT_NOT_RUNNING
    if state is None:
        if args.json:
            _print(_status_document(**dead))
        else:
            _print(f"node-agent has not run on this node (no state file at {path})")
        return EXIT_NOT_RUNNING
    agent_alive = process_alive(state.agent_pid, state.agent_create_time)
    worker_alive = process_alive(state.worker_pid, state.worker_create_time)
    if args.json:
        document = {
            **state.to_json(),
            "worker_token": state.worker_token and REDACTED,
            "state_file": path,
            "agent_alive": agent_alive,
            "worker_alive": worker_alive,
        }
        _print(json.dumps(document, indent=2, sort_keys=True))
    else:
        _print(status_text(state, agent_alive, worker_alive))
    return EXIT_OK if agent_alive else EXIT_NOT_RUNNING


def status_text(state: AgentState, agent_alive: bool, worker_alive: bool) -> str:
    """The state as a few lines for an operator."""

    def when(stamp: Optional[float]) -> str:
        return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))

    alive = {True: "running", False: "not running"}
    rows = [
        ("agent", f"pid {state.agent_pid}, {alive[agent_alive]}, phase {state.phase}"),
        (
            "worker",
            f"{state.worker_name} ({state.flavour}), "
            + (
                f"pid {state.worker_pid}, {alive[worker_alive]}"
                if state.worker_pid
                else "not running"
            ),
        ),
        ("started", when(state.started_at)),
        ("restarts", f"{state.restarts}" + (", CRASH LOOP" if state.crash_loop else "")),
        (
            "last exit",
            "-"
            if state.last_exit_code is None
            else f"{state.last_exit_code} ({state.last_exit_reason}) at {when(state.last_exit_at)}",
        ),
        ("next start", when(state.next_start_at)),
        ("config", state.config_path),
    ]
    if state.stop_reason:
        rows.append(("stop reason", state.stop_reason))
    if state.platform_event:
        rows.append(("platform", f"the worker stops or stopped for the {state.platform_event}"))
    if state.unfit:
        rows.append(("health", f"UNFIT, no new work: {state.unfit}"))
    return "\n".join(f"{label:<11} {value}" for label, value in rows)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check; print one row each (or JSON); exit 6 if any failed."""
    from node_agent import doctor  # noqa: PLC0415

    rows = doctor.run_checks(_environ(args))
    if args.json:
        _print(json.dumps(doctor.to_json(rows), indent=2))
    else:
        _print(doctor.render(rows))
    return EXIT_OK if doctor.healthy(rows) else EXIT_UNHEALTHY


def cmd_env(args: argparse.Namespace) -> int:
    """Print the parsed environment."""
    from node_agent.node.env import BatchEnv  # noqa: PLC0415
    from node_agent.node.envview import env_summary, env_to_json  # noqa: PLC0415

    env = BatchEnv.from_environ(_environ(args))
    if args.json:
        _print(json.dumps(env_to_json(env), indent=2, sort_keys=True))
    else:
        _print(env_summary(env))
    return EXIT_OK


def cmd_fleet(args: argparse.Namespace) -> int:
    """The operator's farm commands (``node_agent.fleet``)."""
    # Imported here, not at the top: fleet and its Azure SDK are operator-side, not
    # in the node's package; only an operator running `node-agent fleet` loads them.
    try:
        from node_agent.fleet.command import main as fleet_main  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        # Whatever it lacks (the Azure SDK, or node-agent's own dependencies where
        # only the package was copied), the fix is the same install.
        raise InvalidInput(
            "node-agent fleet is not installed here",
            [Problem("fleet", f"needs {exc.name}: {usage.install_fleet()}")],
        ) from None
    return fleet_main(args.rest, verbose=args.verbose)


def _command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    summary: str,
    parents: Sequence[argparse.ArgumentParser],
    shape: str = "",
) -> argparse.ArgumentParser:
    return commands.add_parser(  # type: ignore[no-any-return]
        name,
        parents=parents,
        usage=f"node-agent {name} [--env-file FILE]{shape}" if shape else None,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=usage.epilog(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _settings_parser() -> argparse.ArgumentParser:
    """The settings' options, each with its default and variable from its spec."""
    settings = argparse.ArgumentParser(add_help=False)
    group = settings.add_argument_group(usage.SETTINGS_TITLE, usage.SETTINGS_DESCRIPTION)
    for spec in SPECS:
        text, shape = usage.setting_help(spec), usage.metavar(spec)
        if spec.switch:  # alone it means true
            group.add_argument(
                spec.flag, dest=spec.key, nargs="?", const="true", metavar=shape, help=text
            )
        else:
            group.add_argument(spec.flag, dest=spec.key, metavar=shape, help=text)
    return settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="node-agent",
        description="Turn an Azure Batch node into a supervised Flamenco worker (docs/cli.md).",
        epilog=usage.epilog(""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"node-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        metavar="FILE",
        help="read KEY=VALUE lines from FILE over the process environment (the file "
        "wins; default: the process environment alone)",
    )
    json_help = "print JSON (its shape: docs/%s)"
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    env = _command(commands, "env", "show the parsed Batch environment", [common])
    env.add_argument("--json", action="store_true", help=json_help % "environment.md")
    env.set_defaults(func=cmd_env)

    settings = _settings_parser()
    boot = _command(
        commands,
        "bootstrap",
        "link blender/ffmpeg onto PATH and write the worker config",
        [common, settings],
        " [--dry-run] [SETTINGS]",
    )
    boot.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    boot.set_defaults(func=cmd_bootstrap)

    run = _command(
        commands,
        "run",
        "bootstrap, then run and supervise the worker (the start task)",
        [common, settings],
        " [SETTINGS]",
    )
    run.set_defaults(func=cmd_run)

    status = _command(
        commands,
        "status",
        "show the agent's state from its state file",
        [common],
    )
    status.add_argument("--json", action="store_true", help=json_help % "state-file.md")
    status.set_defaults(func=cmd_status)

    diagnose = _command(
        commands,
        "doctor",
        "check the node and say how to fix what is wrong",
        [common],
    )
    diagnose.add_argument("--json", action="store_true", help=json_help % "doctor.md")
    diagnose.set_defaults(func=cmd_doctor)

    # Its own parser takes every argument after it ('+' prefixes: none of its
    # options, --help included, belong to this parser).
    fleet = commands.add_parser(
        "fleet",
        add_help=False,
        prefix_chars="+",
        help="the farm as a whole, from the operator's machine (the fleet extra): "
        "status, prune, heal, scale; `node-agent fleet --help`",
    )
    fleet.add_argument("rest", nargs=argparse.REMAINDER)
    fleet.set_defaults(func=cmd_fleet)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; return its exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InvalidInput as exc:
        log.error("%s", exc.render())
        return EXIT_INVALID
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return EXIT_ALREADY_RUNNING
    except RuntimeFailure as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 (the last resort: one line, never a traceback)
        log.error("node-agent failed: %s", unexpected(exc))
        return EXIT_FAILURE
