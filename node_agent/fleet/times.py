"""Times as fleet reads and writes them. Read: RFC 3339 as the Manager (Go) and Batch
write it, with a fraction of up to nine digits and ``Z`` or an offset. Written (in
fleet's JSON): ISO 8601, UTC, ``Z``, milliseconds. Pure."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)")


def seconds(stamp: Optional[str]) -> Optional[float]:
    """An RFC 3339 time as a Unix time (None: none, or unreadable)."""
    match = _RFC3339.fullmatch(stamp or "")
    if match is None:
        return None
    zone = "+00:00" if match.group(3) in "Zz" else match.group(3)
    fraction = (match.group(2) or "0")[:6]
    try:
        when = datetime.fromisoformat(f"{match.group(1)[:10]}T{match.group(1)[11:]}")
        parsed = datetime.fromisoformat(f"{when.isoformat()}.{fraction:0<6}{zone}")
    except ValueError:
        return None
    return parsed.timestamp()


def iso(stamp: Optional[float]) -> Optional[str]:
    """A Unix time as ISO 8601 UTC (``2026-01-01T10:00:00.000Z``); None for None."""
    if stamp is None:
        return None
    when = datetime.fromtimestamp(stamp, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
