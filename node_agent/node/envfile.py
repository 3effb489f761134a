"""Read ``KEY=VALUE`` environment files (fixtures, ``--env-file``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Optional

from node_agent.common import fsutil
from node_agent.common.errors import InvalidInput, Problem

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_env_text(text: str, source: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines: blank lines and ``#`` comments are skipped, leading
    whitespace and an ``export`` prefix are allowed, the value is taken literally
    (up to the end of the line, no quote processing, as ``env`` prints it)."""
    result: dict[str, str] = {}
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        if not sep or not _NAME.match(name):
            problems.append(
                Problem(f"{source}:{number}", "expected NAME=VALUE (a comment starts with #)")
            )
            continue
        result[name] = value
    if problems:
        raise InvalidInput(f"cannot read environment file {source}", problems)
    return result


MAX_ENV_FILE_BYTES = 1 << 20  # a whole Batch environment is a few KiB


def load_env_file(path: str) -> dict[str, str]:
    """Read an environment file, as ``parse_env_text`` describes (a regular file of
    at most 1 MiB: never a FIFO or a device, which could hang or never end)."""
    try:
        text = fsutil.read_bounded(path, MAX_ENV_FILE_BYTES).decode("utf-8")
    except (OSError, ValueError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            reason = f"is not UTF-8 text (byte {exc.start})"
        else:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(
            "cannot read environment file",
            [Problem(path, f"{reason}; pass an existing KEY=VALUE file to --env-file")],
        ) from None
    return parse_env_text(text, path)


def overlay(base: Mapping[str, str], env_file: Optional[str]) -> dict[str, str]:
    """The process environment with an env file laid over it (the file wins)."""
    merged = dict(base)
    if env_file is not None:
        merged.update(load_env_file(env_file))
    return merged
