"""The agent's own messages: stderr, ``node-agent: LEVEL: message``.

On Batch that is the start task's stderr.txt, next to the worker's own stderr, so
the prefix is what tells the two apart.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "node_agent"


def setup_logging(verbose: bool = False) -> None:
    """Send the agent's log records to stderr, one flushed line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("node-agent: %(levelname)s: %(message)s"))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    """A logger under the agent's namespace."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
