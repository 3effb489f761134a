"""Folder-name recovery of package ids and versions, proven on generated inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node_agent.node.packages import choose_package, flatten, group_packages

# Batch application ids: letters, digits, '-' and '_'; versions also '.' (and '#',
# which Batch flattens too).
ids = st.text(alphabet="abcXYZ019-_", min_size=1, max_size=12)
versions = st.text(alphabet="abcXYZ019-_.#", min_size=1, max_size=12)
timestamps = st.builds(
    "{:04d}-{:02d}-{:02d}-{:02d}-{:02d}".format,
    st.integers(2016, 2099),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
)
cases = st.sampled_from(["keep", "lower", "upper"])


def _case(text: str, how: str) -> str:
    return {"keep": text, "lower": text.lower(), "upper": text.upper()}[how]


def _folder(package_id: str, version: str, stamp: str) -> str:
    return f"/mnt/batch/tasks/applications/{package_id}{version}{stamp}"


def _flat_as_batch(text: str) -> str:
    return text.replace(".", "_").replace("-", "_").replace("#", "_")


@given(ids, versions, timestamps, cases)
def test_default_and_versioned_variables_always_recover(
    package_id: str, version: str, stamp: str, how: str
) -> None:
    path = _folder(package_id, version, stamp)
    pairs = [
        (_case(_flat_as_batch(package_id), how), path),
        (_case(_flat_as_batch(f"{package_id}_{version}"), how), path),
    ]
    [package] = group_packages(pairs)
    assert (package.id, package.version, package.is_default) == (package_id, version, True)
    assert package.matches(package_id)


@given(ids, versions, timestamps)
def test_default_variable_alone_recovers(package_id: str, version: str, stamp: str) -> None:
    [package] = group_packages([(_flat_as_batch(package_id), _folder(package_id, version, stamp))])
    assert (package.id, package.version) == (package_id, version)


@given(ids, versions, timestamps, cases)
def test_versioned_variable_alone_recovers_or_says_unknown(
    package_id: str, version: str, stamp: str, how: str
) -> None:
    suffix = _case(_flat_as_batch(f"{package_id}_{version}"), how)
    [package] = group_packages([(suffix, _folder(package_id, version, stamp))])
    assert (package_id, version) in package.readings
    assert not package.is_default
    # The joining '_' is ambiguous exactly when it touches another flattened '_' that
    # could be the join instead while leaving both id and version non-empty.
    ambiguous = (len(package_id) > 1 and flatten(package_id).endswith("_")) or (
        len(version) > 1 and flatten(version).startswith("_")
    )
    if ambiguous:
        assert package.version is None
        assert len(package.readings) > 1
    else:
        assert (package.id, package.version) == (package_id, version)
    assert package.matches(package_id)


@given(ids, versions, ids, timestamps)
def test_a_variable_for_another_package_never_fits(
    package_id: str, version: str, other: str, stamp: str
) -> None:
    if flatten(other) == flatten(package_id):
        return
    [package] = group_packages([(_flat_as_batch(other), _folder(package_id, version, stamp))])
    # A prefix of the real id can fit the folder, but never as the real split; a
    # variable that does not fit at all leaves a package of unknown version that its
    # variable still names.
    assert (package_id, version) not in package.readings
    assert package.matches(other)


@given(st.text(min_size=1, max_size=30), ids)
def test_any_folder_name_is_a_package_its_variable_finds(folder: str, package_id: str) -> None:
    folder = folder.replace("/", "_")
    path = f"/mnt/batch/tasks/applications/{folder}"
    for suffix in (_flat_as_batch(package_id), _flat_as_batch(package_id) + "_1_0"):
        [package] = group_packages([(suffix, path)])
        assert package.path == path and package.matches(package_id)
        found = choose_package([package], package_id)
        assert found is not None and found.package is package
