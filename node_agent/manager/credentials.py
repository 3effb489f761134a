"""The worker's credentials file, as the agent reads it: only the worker's id,
never its secret."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml


def worker_id(credentials: Path) -> Optional[str]:
    """The v3 worker's id from its credentials file; None when there is none yet or
    it cannot be read."""
    try:
        document = yaml.safe_load(credentials.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    value = document.get("worker_id") if isinstance(document, dict) else None
    return str(value) if value else None
