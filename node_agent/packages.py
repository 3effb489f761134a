"""Application packages: recover each package's real id and version.

Batch extracts a package to ``<root>/applications/<id><version><timestamp>`` and
names it in variables whose suffix is the id (default version) or ``<id>_<version>``
with ``.``, ``-`` and ``#`` flattened to ``_`` (and, on some nodes, in more than one
letter case). Flattening keeps lengths, so the folder name says where the id ends
in all but one case: a versioned-only variable whose joining ``_`` touches another
``_`` (id ending or version starting with ``.-#_``). Then several readings fit, and
the id and version are reported as unknown rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

PREFIX = "AZ_BATCH_APP_PACKAGE_"
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}\Z")
_FLATTENED = str.maketrans({".": "_", "-": "_", "#": "_"})


def flatten(text: str) -> str:
    """Flatten an id or version the way Batch does for variable names, case-folded."""
    return text.translate(_FLATTENED).lower()


Reading = tuple[str, str]  # (id, version) as spelt in the folder name


def strip_timestamp(folder_name: str) -> str:
    """The ``<id><version>`` part of a package folder's name."""
    match = _TIMESTAMP.search(folder_name)
    return folder_name[: match.start()] if match else folder_name


def readings(suffix: str, stem: str) -> frozenset[Reading]:
    """Every (id, version) split of ``stem`` that the variable suffix can describe."""
    flat_suffix = suffix.lower()
    found: set[Reading] = set()
    # Default-version variable: the suffix is the whole flattened id.
    if len(flat_suffix) < len(stem) and flatten(stem[: len(flat_suffix)]) == flat_suffix:
        found.add((stem[: len(flat_suffix)], stem[len(flat_suffix) :]))
    # Versioned variable: the suffix is id + "_" + version, one character longer.
    if len(flat_suffix) == len(stem) + 1:
        flat_stem = flatten(stem)
        for cut in range(1, len(stem)):
            if (
                flat_suffix[cut] == "_"
                and flat_suffix[:cut] == flat_stem[:cut]
                and flat_suffix[cut + 1 :] == flat_stem[cut:]
            ):
                found.add((stem[:cut], stem[cut:]))
    return frozenset(found)


@dataclass(frozen=True)
class AppPackage:
    """One extracted application package folder and the variables that name it."""

    path: str
    variables: tuple[str, ...]
    readings: frozenset[Reading]
    is_default: bool

    @property
    def id(self) -> Optional[str]:
        """The package id as spelt in its folder name, or None when ambiguous."""
        ids = {package_id for package_id, _ in self.readings}
        return next(iter(ids)) if len(ids) == 1 else None

    @property
    def version(self) -> Optional[str]:
        """The package version as spelt in its folder name, or None when ambiguous."""
        return next(iter(self.readings))[1] if len(self.readings) == 1 else None

    def matches(self, package_id: str) -> bool:
        """Whether ``package_id`` names this package (any case, ``-``/``_``/``.`` alike)."""
        wanted = flatten(package_id)
        return any(flatten(candidate) == wanted for candidate, _ in self.readings)


def group_packages(
    variables: Iterable[tuple[str, str]],
) -> tuple[list[AppPackage], list[tuple[str, str]]]:
    """Group ``(suffix, folder path)`` pairs into packages, one per folder.

    Returns the packages and the ``(suffix, path)`` pairs that no reading of their
    folder name fits: variables pointing somewhere that is not their package.
    """
    by_path: dict[str, list[str]] = {}
    for suffix, path in variables:
        by_path.setdefault(path, []).append(suffix)
    packages: list[AppPackage] = []
    misfits: list[tuple[str, str]] = []
    for path, suffixes in sorted(by_path.items()):
        stem = strip_timestamp(path.rstrip("/").rsplit("/", 1)[-1])
        common: Optional[frozenset[Reading]] = None
        is_default = False
        for suffix in sorted(suffixes):
            fits = readings(suffix, stem)
            if not fits:
                misfits.append((suffix, path))
                continue
            # Only a default-version variable yields a reading whose id flattens to it.
            is_default = is_default or any(flatten(i) == suffix.lower() for i, _ in fits)
            common = fits if common is None else common & fits
        if common:
            packages.append(
                AppPackage(
                    path=path,
                    variables=tuple(PREFIX + s for s in sorted(suffixes)),
                    readings=common,
                    is_default=is_default,
                )
            )
        elif common is not None:
            # Every variable fits the folder on its own, but they disagree on the id.
            misfits.extend((s, path) for s in sorted(suffixes))
    return packages, misfits
