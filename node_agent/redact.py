"""Which names hold secrets, and how every printer hides their values."""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# Matched anywhere in a name, case-insensitively: AZ_BATCH_AUTHENTICATION_TOKEN,
# STORAGE_ACCOUNT_KEY, FLAMENCO_REGISTRATION_SECRET, worker_secret, ...
_SECRET_NAME = re.compile(r"SECRET|KEY|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """True when a variable or setting of this name must never be printed."""
    return bool(_SECRET_NAME.search(name))


def shown(name: str, value: str) -> str:
    """The value as it may appear in output: quoted, or redacted for a secret name."""
    return REDACTED if is_secret(name) else repr(value)


def printable(text: str) -> str:
    """The text as a report may show it: as it is, or escaped (``ascii``) when it holds
    a newline, control or direction-changing character that could fake a line."""
    return text if text.isprintable() else ascii(text)
