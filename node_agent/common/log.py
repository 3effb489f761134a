"""The agent's own messages: stderr, ``<RFC 3339 UTC time> node-agent: LEVEL: message``.

On Batch that is the start task's stderr.txt, next to the worker's own stderr, so
the prefix is what tells the two apart, and the time (UTC, to the millisecond, as
RFC 3339 allows; the v3 worker stamps its own lines RFC 3339 to the second) is what
answers "when did it restart?" over a node's days-long life.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Optional, TextIO

from node_agent.common import logfiles
from node_agent.common.redact import REDACTED, redact_urls

LOGGER_NAME = "node_agent"

PREFIX = "node-agent: %(levelname)s: "


def rfc3339(when: float) -> str:
    """``when`` (Unix seconds) as an RFC 3339 UTC time to the millisecond:
    ``2025-01-31T23:59:59.123Z``."""
    whole = int(when)
    millis = int((when - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class _Redactor(logging.Formatter):
    """Formats records with their time and level, then scrubs them (``scrub``): a
    safety net under the rule that no message is ever built with a secret in it."""

    def __init__(self) -> None:
        super().__init__("%(message)s")
        self.secrets: set[str] = set()

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{rfc3339(record.created)} {PREFIX % {'levelname': record.levelname}}"
        text = super().format(record)
        if getattr(record, "each_line", False):
            text = text.replace("\n", "\n" + prefix)
        return scrub(prefix + text)


_formatter = _Redactor()


def scrub(text: str) -> str:
    """``text`` without any known secret value or URL password: for every line
    node-agent prints, log or not. Known secrets first: a URL password among them
    may hold what ends ``redact_urls``'s match early (a space)."""
    for secret in _formatter.secrets:
        text = text.replace(secret, REDACTED)
    return redact_urls(text)


def hide_secrets(values: Iterable[str]) -> None:
    """Never let these values appear in the agent's log output."""
    _formatter.secrets.update(v for v in values if len(v) >= 4)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        try:
            self.fd: Optional[int] = stream.fileno()
        except (OSError, ValueError):  # a stream without a file (a test's capture)
            self.fd = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.fd is None:
            super().emit(record)
            return
        # Never while the file is being cut (``logfiles``): the line would be lost.
        with logfiles.locked(self.fd):
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # stderr.txt lives on the node's disk: when that is full the line is lost, and
        # must not be replaced by a traceback (which would be lost too) or worse.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handleError(record)


def setup_logging(verbose: bool = False) -> None:
    """Send the agent's log records to stderr, one flushed line each."""
    handler = _Handler(sys.stderr)
    handler.setFormatter(_formatter)
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def log_lines(logger: logging.Logger, level: int, lines: Sequence[str]) -> None:
    """Log ``lines`` as one record, each line with the prefix (one time for all): it
    is written at once, so that nothing another process writes to the same file (the
    agent beside the start-up health report, the worker) lands between them."""
    logger.log(level, "%s", "\n".join(lines), extra={"each_line": True})


def get_logger(name: str) -> logging.Logger:
    """A logger under the agent's namespace."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
