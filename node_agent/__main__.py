"""``python -m node_agent``: the same as the ``node-agent`` command."""

import sys

from node_agent.cli import main

sys.exit(main())
