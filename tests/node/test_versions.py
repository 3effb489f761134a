"""The order of package versions and the choice between folders of one package,
proven on generated inputs."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from node_agent.node.packages import AppPackage, choose_package
from node_agent.node.versions import version_key

numbers = st.lists(st.integers(0, 10**6), min_size=1, max_size=5)
words = st.sampled_from(["alpha", "beta", "rc", "daily", "dev"])
# Anything Batch accepts as a version, and more: the order must never fail.
texts = st.text(max_size=20)


def _dotted(parts: list[int]) -> str:
    return ".".join(str(p) for p in parts)


def test_known_cases() -> None:
    ordered = [
        "2.79",
        "2.80-daily-2019-10-14",
        "2.80",
        "4.1.0",
        "4.2.0-beta",
        "4.2.0-rc1",
        "4.2.0",
        "4.2.3",
        "v4.10",
        "10.0",
    ]
    assert sorted(reversed(ordered), key=version_key) == ordered


@given(numbers, numbers)
def test_numbers_compare_as_numbers(a: list[int], b: list[int]) -> None:
    """Same-length dotted versions (4.2.3, 10.0.1) order like their numbers."""
    b = (b + a)[: len(a)]
    assert (version_key(_dotted(a)) < version_key(_dotted(b))) == (a < b)


@given(numbers, words)
def test_a_word_after_the_numbers_is_a_pre_release(parts: list[int], word: str) -> None:
    release = _dotted(parts)
    assert version_key(f"{release}-{word}") < version_key(release)
    following = _dotted([*parts[:-1], parts[-1] + 1])
    assert version_key(f"{following}-{word}") > version_key(release)


@given(texts, texts, texts)
def test_a_total_order_on_any_text(a: str, b: str, c: str) -> None:
    ka, kb, kc = version_key(a), version_key(b), version_key(c)
    assert (ka == kb) == (a == b)  # two different versions are never equal
    assert (ka < kb) != (kb < ka) or a == b
    if ka <= kb <= kc:
        assert ka <= kc


def _package(version: str, default: bool, index: int) -> AppPackage:
    path = f"/mnt/batch/tasks/applications/blender{version}2025-01-01-00-{index:02d}"
    variables = ["AZ_BATCH_APP_PACKAGE_blender_x"] + (["AZ_BATCH_APP_PACKAGE_blender"] * default)
    return AppPackage(
        path=path,
        variables=tuple(variables),
        readings=frozenset({("blender", version)}),
        is_default=default,
    )


@given(st.lists(st.tuples(numbers, st.booleans()), min_size=1, max_size=6), st.randoms())
def test_the_choice_is_the_default_then_the_highest_in_any_order(
    specs: list[tuple[list[int], bool]], shuffle: random.Random
) -> None:
    packages = [_package(_dotted(parts), default, i) for i, (parts, default) in enumerate(specs)]
    expected = max(packages, key=lambda p: (p.is_default, version_key(p.version or ""), p.path))
    shuffle.shuffle(packages)
    choice = choose_package(packages, "Blender")
    assert choice is not None and choice.package == expected
    assert {p.path for p in choice.others} == {p.path for p in packages} - {expected.path}
    if not choice.others:
        assert choice.reason == "the only folder for it"
    elif expected.is_default and not any(p.is_default for p in choice.others):
        assert choice.reason == "the pool's default version"
    else:
        assert choice.reason == "the highest version"


def test_a_known_version_wins_over_an_unknown_one() -> None:
    known = _package("4.2.3", False, 1)
    unknown = AppPackage(
        "/mnt/batch/tasks/applications/zzz", ("AZ_BATCH_APP_PACKAGE_blender_9",), frozenset(), None
    )
    choice = choose_package([unknown, known], "blender")
    assert choice is not None and choice.package is known and choice.others == (unknown,)
