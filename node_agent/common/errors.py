"""Exit codes and the error types that carry them to the command line.

Bad input is reported as a list of problems, all at once, so an operator fixes a
pool's configuration in one round instead of one fault per node restart.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILURE = 1  # the node could not be set up or kept running (I/O, processes)
EXIT_USAGE = 2  # the command line itself is wrong (argparse's own code)
EXIT_INVALID = 3  # the environment, an env file or the settings are invalid
EXIT_ALREADY_RUNNING = 4  # run: another agent already supervises this node's worker
EXIT_NOT_RUNNING = 5  # status: no agent is running on this node
EXIT_UNHEALTHY = 6  # doctor: at least one check failed


@dataclass(frozen=True)
class Problem:
    """One fault in the input: where it is (a variable, setting or path) and what to do."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class InvalidInput(Exception):
    """Bad input, with every problem found. Exits with ``EXIT_INVALID``."""

    def __init__(self, title: str, problems: Iterable[Problem]) -> None:
        self.title = title
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self.render())

    def render(self) -> str:
        """The title and one indented line per problem."""
        lines = [f"{self.title} ({len(self.problems)} problem(s)):"]
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


class RuntimeFailure(Exception):
    """The input was fine but the node could not be set up. Exits with ``EXIT_FAILURE``."""


def unexpected(exc: BaseException) -> str:
    """An exception nobody expected (a bug, an odd fault) in one line: its type,
    where it was raised and its message's first line, for the log line that stands
    in for a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {_source_name(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}{where}" + (f": {message[0]}" if message else "")


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source_name(filename: str) -> str:
    """A source file's path in node_agent (``runtime/supervise.py``), or its name."""
    path = os.path.abspath(filename)
    if path.startswith(_PACKAGE + os.sep):
        return os.path.relpath(path, _PACKAGE)
    return os.path.basename(path)
