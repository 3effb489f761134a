"""``python -m tests.patched_agent CONSTANTS ARGS...``: the real ``node-agent ARGS``
with some module constants changed first; CONSTANTS is a JSON object of
``"module.NAME": value``. Only for tests whose real waits (a two-minute first
request, a look at the node's health a minute) would blow the suite's time budget:
each test says what it shortened."""

from __future__ import annotations

import importlib
import json
import sys

from node_agent.cli import main


def patch(constants: dict[str, object]) -> None:
    """Set each ``module.NAME`` (which must exist) to its value."""
    for name, value in constants.items():
        module_name, _, attribute = name.rpartition(".")
        module = importlib.import_module(module_name)
        if not hasattr(module, attribute):
            raise SystemExit(f"patched_agent: {module_name} has no {attribute}")
        setattr(module, attribute, value)


if __name__ == "__main__":
    patch(json.loads(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
