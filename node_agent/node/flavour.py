"""Which Flamenco Worker generation the ``flamenco-worker`` package holds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Optional


class Flavour(Enum):
    """Which Flamenco Worker generation the package holds."""

    AUTO = "auto"
    V2 = "v2"
    V3 = "v3"


@dataclass(frozen=True)
class FlavourChoice:
    """The worker generation to configure, why, and whether it is a guess."""

    flavour: Flavour
    reason: str
    guessed: bool


def resolve_flavour(chosen: Flavour, package_version: Optional[str]) -> FlavourChoice:
    """``auto`` follows the ``flamenco-worker`` package's major version: 2.x is v2,
    3.x and later v3; anything else falls back to v3 as a guess (callers warn)."""
    if chosen is not Flavour.AUTO:
        return FlavourChoice(chosen, "set by the operator", guessed=False)
    match = re.match(r"v?(\d+)", package_version or "")
    major = int(match.group(1)) if match else None
    if major is not None and major >= 2:
        flavour = Flavour.V2 if major == 2 else Flavour.V3
        return FlavourChoice(flavour, f"flamenco-worker package version {package_version}", False)
    return FlavourChoice(
        Flavour.V3,
        f"flamenco-worker package version {package_version or 'unknown'} does not say which "
        "worker generation it is; assuming v3 (set FLAMENCO_WORKER_FLAVOUR to be sure)",
        guessed=True,
    )
