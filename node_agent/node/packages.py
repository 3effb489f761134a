"""Application packages: recover each package's real id and version.

Batch extracts a package to ``<root>/applications/<id><version><timestamp>`` and
names it in variables whose suffix is the id (default version) or ``<id>_<version>``
with ``.``, ``-`` and ``#`` flattened to ``_`` (and, on some nodes, in more than one
letter case). Flattening keeps lengths, so the folder name says where the id ends
in all but one case: a versioned-only variable whose joining ``_`` touches another
``_`` (id ending or version starting with ``.-#_``). Then several readings fit, and
the id and version are reported as unknown rather than guessed.

That naming is undocumented, so a folder whose name does not read that way is kept
too, as a package of unknown version known only by its variables. With several
folders for one id, ``choose_package`` picks one the same way every time: the
pool's default version first, then the highest version (``versions``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable, Optional

from node_agent.common.errors import Problem
from node_agent.node.versions import VersionKey, version_key

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
    flat_suffix = flatten(suffix)
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
    """One extracted application package folder and the variables that name it.

    ``readings`` is empty when the folder's name does not read as
    ``<id><version><timestamp>`` for its variables: then only the variables say which
    package it is, its version is unknown, and so is whether it is the default.
    """

    path: str
    variables: tuple[str, ...]
    readings: frozenset[Reading]
    is_default: Optional[bool]

    @property
    def id(self) -> Optional[str]:
        """The package id as spelt in its folder name, or None when ambiguous."""
        ids = {package_id for package_id, _ in self.readings}
        return next(iter(ids)) if len(ids) == 1 else None

    @property
    def version(self) -> Optional[str]:
        """The package version as spelt in its folder name, or None when unknown."""
        return next(iter(self.readings))[1] if len(self.readings) == 1 else None

    @property
    def suffixes(self) -> frozenset[str]:
        """The variables' names after the prefix, flattened."""
        return frozenset(flatten(v[len(PREFIX) :]) for v in self.variables)

    def ids(self) -> frozenset[str]:
        """Every flattened id this package may have: its folder's readings, or for a
        folder name that does not parse, each way to cut a variable's suffix."""
        if self.readings:
            return frozenset(flatten(package_id) for package_id, _ in self.readings)
        return frozenset(
            suffix[:cut]
            for suffix in self.suffixes
            for cut in range(1, len(suffix) + 1)
            if cut == len(suffix) or suffix[cut] == "_"
        )

    def matches(self, package_id: str) -> bool:
        """Whether ``package_id`` names this package (any case, ``-``/``_``/``.`` alike)."""
        return flatten(package_id) in self.ids()

    def is_default_for(self, package_id: str) -> bool:
        """Whether the pool's default-version variable of ``package_id``
        (``AZ_BATCH_APP_PACKAGE_<id>``) names this folder."""
        return flatten(package_id) in self.suffixes


def group_packages(variables: Iterable[tuple[str, str]]) -> list[AppPackage]:
    """Group ``(suffix, folder path)`` pairs into packages: per folder, one for the
    variables its name reads as and one (version unknown) for the rest."""
    by_path: dict[str, list[str]] = {}
    for suffix, path in variables:
        by_path.setdefault(path, []).append(suffix)
    packages: list[AppPackage] = []
    for path, suffixes in sorted(by_path.items()):
        stem = strip_timestamp(path.rstrip("/").rsplit("/", 1)[-1])
        fits = {suffix: readings(suffix, stem) for suffix in sorted(suffixes)}
        fitting = [suffix for suffix, found in fits.items() if found]
        common = frozenset.intersection(*(fits[s] for s in fitting)) if fitting else frozenset()
        if not common:
            fitting = []  # each variable may fit the folder alone, yet they disagree on the id
        if fitting:
            # Only a default-version variable yields a reading whose id flattens to it.
            is_default = any(flatten(i) == flatten(s) for s in fitting for i, _ in fits[s])
            packages.append(AppPackage(path, _names(fitting), common, is_default))
        rest = [suffix for suffix in fits if suffix not in fitting]
        if rest:
            packages.append(AppPackage(path, _names(rest), frozenset(), None))
    return packages


def _names(suffixes: Iterable[str]) -> tuple[str, ...]:
    return tuple(PREFIX + s for s in sorted(suffixes))


@dataclass(frozen=True)
class PackageChoice:
    """The folder used for a package id, why, and the other folders it has."""

    package: AppPackage
    reason: str
    others: tuple[AppPackage, ...]


def choose_package(packages: Iterable[AppPackage], package_id: str) -> Optional[PackageChoice]:
    """The folder to use for ``package_id``, None when no package matches: the pool's
    default version first, then the highest version, known versions before unknown,
    the last folder name last; the same answer whatever order ``packages`` is in."""

    def rank(package: AppPackage) -> tuple[bool, bool, VersionKey, str]:
        version = package.version
        return (
            package.is_default_for(package_id),
            version is not None,
            version_key(version or ""),
            package.path,
        )

    ranked = sorted((p for p in packages if p.matches(package_id)), key=rank, reverse=True)
    if not ranked:
        return None
    best = ranked[0]
    others = tuple(p for p in ranked[1:] if p.path != best.path)
    if not others:
        reason = "the only folder for it"
    elif best.is_default_for(package_id) and not others[0].is_default_for(package_id):
        reason = "the pool's default version"
    elif best.version is None:
        reason = "no folder's version is known: the last folder by name"
    else:
        reason = "the highest version"
    return PackageChoice(best, reason, others)


def read_packages(
    variables: Iterable[tuple[str, str]],
    applications_dir: Optional[str],
    shown: Callable[[str, str], str],
) -> tuple[tuple[AppPackage, ...], list[Problem]]:
    """The packages that ``(variable name, absolute folder path)`` pairs describe, and
    a warning for everything odd about them: none of it stops the agent, which only
    needs the packages it uses (``shown`` quotes a variable's value for a message)."""
    warnings: list[Problem] = []

    def warn(name: str, path: str, message: str) -> None:
        warnings.append(Problem(f"{name}={shown(name, path)}", message))

    pairs: list[tuple[str, str]] = []
    for name, path in variables:
        suffix = name[len(PREFIX) :]
        if not flatten(suffix).strip("_"):
            warn(name, path, f"expected {PREFIX}<id> or {PREFIX}<id>_<version>; ignored")
            continue
        if flatten(suffix) != suffix.lower():
            warn(name, path, "has '.', '-' or '#' in its name, which Batch flattens to '_'")
        if applications_dir is not None and posixpath.dirname(path) != applications_dir:
            warn(
                name,
                path,
                f"is not a folder directly in {applications_dir!a}, where Batch usually "
                "extracts packages; used as it is",
            )
        pairs.append((suffix, path))
    packages = group_packages(pairs)
    for package in packages:
        if not package.readings:
            warnings.append(
                Problem(
                    ", ".join(package.variables),
                    f"folder {posixpath.basename(package.path)!a} does not read as "
                    "<id><version><timestamp> for this variable (Batch's naming is "
                    "undocumented): version unknown",
                )
            )
    for package_id in sorted({flatten(p.id) for p in packages if p.id}):
        choice = choose_package(packages, package_id)
        if choice is not None and choice.others:
            warnings.append(_ambiguity(package_id, choice))
    return tuple(packages), warnings


def _ambiguity(package_id: str, choice: PackageChoice) -> Problem:
    def described(package: AppPackage) -> str:
        return f"{package.version or 'version unknown'} at {package.path!a}"

    others = "; ".join(described(p) for p in choice.others)
    return Problem(
        f"package {choice.package.id or package_id}",
        f"{1 + len(choice.others)} folders; node-agent uses {described(choice.package)} "
        f"({choice.reason}), not {others}",
    )
