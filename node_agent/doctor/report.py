"""What a check gives: one row per finding, and how the rows are printed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from node_agent.common.redact import printable

JSON_SCHEMA_VERSION = 1


class Status(Enum):
    """How a check went."""

    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Row:
    """One check's result."""

    check: str
    status: Status
    found: str
    fix: Optional[str] = None


def render(rows: list[Row]) -> str:
    """One aligned line per check, the fix indented below anything not ok."""
    width = max(len(r.check) for r in rows)
    lines = []
    for row in rows:
        # Found text quotes the node (paths, tool output): one line per row, always.
        found = printable(row.found)
        lines.append(f"{row.status.value.upper():<8} {row.check:<{width}}  {found}")
        if row.fix and row.status is not Status.OK:
            lines.append(f"{'':<8} {'':<{width}}  fix: {row.fix}")
    return "\n".join(lines)


def to_json(rows: list[Row]) -> dict[str, Any]:
    """The report as the documented JSON document (``schema`` 1)."""
    return {
        "schema": JSON_SCHEMA_VERSION,
        "healthy": healthy(rows),
        "checks": [
            {"check": r.check, "status": r.status.value, "found": r.found, "fix": r.fix}
            for r in rows
        ],
    }


def healthy(rows: list[Row]) -> bool:
    """Whether no check failed."""
    return all(r.status is not Status.FAILED for r in rows)
