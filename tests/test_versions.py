"""The order of package versions, proven on generated inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node_agent.versions import version_key

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
