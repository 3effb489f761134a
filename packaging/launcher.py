#!/usr/bin/env python3
"""node-agent, as shipped at the top of the flamenco-worker application package.

Runs on the node's system python3 (3.9 or newer) with nothing installed: the agent
and its dependencies are vendored in _node_agent/ beside this file.
"""

import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _vendored() -> str:
    if sys.version_info < (3, 9):  # noqa: UP036 (an old node python gets a clear message)
        sys.exit(
            f"node-agent: ERROR: needs Python 3.9 or newer; {sys.executable} is "
            f"{platform.python_version()}"
        )
    arch = MACHINES.get(platform.machine().lower(), platform.machine())
    vendor = os.path.join(HERE, "_node_agent", f"vendor-{arch}")
    if not os.path.isdir(vendor):
        sys.exit(
            f"node-agent: ERROR: this package has no dependencies built for {arch} "
            f"(no {vendor}); rebuild it with packaging/build --arch {arch}"
        )
    return vendor


sys.path[:0] = [os.path.join(HERE, "_node_agent", "lib"), _vendored()]

from node_agent.cli import main  # noqa: E402 (the path is set up just above)

sys.exit(main())
