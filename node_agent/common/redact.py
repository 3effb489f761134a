"""Which names hold secrets, and how every printer hides their values."""

from __future__ import annotations

import re
from typing import Optional

import yaml

REDACTED = "<redacted>"

# Matched anywhere in a name, case-insensitively: AZ_BATCH_AUTHENTICATION_TOKEN,
# STORAGE_ACCOUNT_KEY, FLAMENCO_REGISTRATION_SECRET, worker_secret, ...
_SECRET_NAME = re.compile(r"SECRET|KEY|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """True when a variable or setting of this name must never be printed."""
    return bool(_SECRET_NAME.search(name))


def shown(name: str, value: str) -> str:
    """The value as it may appear in output: quoted, or redacted for a secret name.
    ``ascii()``, not ``repr()``: a look-alike or direction-changing character shows
    as an escape, so no value can pass for another in a report."""
    return REDACTED if is_secret(name) else ascii(value)


# The password of a ``scheme://user:password@host`` URL (a Manager behind basic auth):
# all of the user info after the first ":", up to the LAST "@" of the authority (which
# ends at "/", "?", "#" or a space), so that an "@" typed unescaped in the password is
# redacted with the rest, as a client takes it.
_URL_PASSWORD = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s:]*):[^/?#\s]*@")


_AUTHORITY_END = re.compile(r"[/?#\s]")


def redact_urls(text: str) -> str:
    """``text`` with the password of every ``user:password@`` URL redacted."""
    return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)


def url_password(value: str) -> Optional[str]:
    """The password ``redact_urls`` would miss in a value meant as a
    ``scheme://user:password@host`` URL: one holding a "/", "?", "#" or a space,
    which makes the value no valid URL (and its error message quotes it), read as an
    operator may have typed it, up to the value's last "@". None for any other
    value: a weak password hidden everywhere would garble every line holding that
    word."""
    _, scheme, rest = value.partition("://")
    user_info = rest.rpartition("@")[0] if scheme else ""
    _, colon, password = user_info.partition(":")
    return password if colon and _AUTHORITY_END.search(password) else None


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML document and where (line, column), without the
    source line pyyaml would quote: it may hold a secret."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{exc.problem or exc.context or 'syntax error'}{where}"
    return type(exc).__name__


def printable(text: str) -> str:
    """The text as a report may show it: as it is, or escaped (``ascii``) when it holds
    a newline, control or direction-changing character that could fake a line."""
    return text if text.isprintable() else ascii(text)
