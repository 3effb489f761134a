"""A total order on application package versions, for choosing between folders.

Batch lets a version be any text, so the order has to cope with anything while doing
the expected thing for the usual shapes: numbers compare as numbers (``10.0`` after
``4.9``, ``4.2.3`` after ``4.1.0``), a leading ``v`` is ignored, and a word after
the numbers marks a pre-release (``4.2.0-beta`` before ``4.2.0``). Separators do not
count (``4-2`` and ``4.2`` compare alike), and versions that compare alike are
ordered by their text, so two different versions are never equal.
"""

from __future__ import annotations

import re

# (kind, number, word): a word sorts before the end of a version, the end before a
# number; so "4.2.0-rc1" < "4.2.0" < "4.2.0.1", and ints never meet strs.
Token = tuple[int, int, str]
VersionKey = tuple[tuple[Token, ...], str]
_WORD, _END, _NUMBER = 0, 1, 2
_PARTS = re.compile(r"[0-9]+|[^\W\d_]+")
_LEADING_V = re.compile(r"\A[vV](?=\d)")


def version_key(version: str) -> VersionKey:
    """The sort key of a version: ``version_key(a) < version_key(b)`` when ``a`` is
    the older."""
    tokens: list[Token] = []
    for part in _PARTS.findall(_LEADING_V.sub("", version)):
        if part[0] in "0123456789":
            tokens.append((_NUMBER, int(part), ""))
        else:
            tokens.append((_WORD, 0, part.casefold()))
    tokens.append((_END, 0, ""))
    return tuple(tokens), version
