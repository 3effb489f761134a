"""packaging/build-tool: tool packages from release archives made here, as users
download them (one top folder, symlinks, executables), and the archives it must
refuse."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest
from archives import Entry, Kind, Staging, read_tar
from links import LinkProblem, resolve
from toolpkg import SYSTEM_LIBS_DIR, version_from_name

from node_agent.bootstrap.libraries import SYSTEM_LIBS_DIR as NODE_SYSTEM_LIBS_DIR
from tests.releases import (
    ELF_LIBRARY,
    Spec,
    build_tool,
    write_folder,
    write_tar,
    write_zip,
)

TOP = "blender-4.2.3-linux-x64"
BLENDER: dict[str, Spec] = {
    f"{TOP}/": None,
    f"{TOP}/blender": (b"#!/bin/sh\necho 'Blender 4.2.3'\n", 0o755),
    f"{TOP}/4.2/datafiles/README": b"Blender's data, found beside its binary\n",
    f"{TOP}/4.2/datafiles/colormanagement/config.ocio": b"ocio_profile_version: 2\n",
    f"{TOP}/lib/libcycles.so.4.2.3": (ELF_LIBRARY, 0o755),
    f"{TOP}/lib/libcycles.so": "->libcycles.so.4.2.3",  # a link to a file
    f"{TOP}/blender-softwaregl": "->blender",  # a link to an executable
    f"{TOP}/4.2/scripts": "->datafiles",  # a link to a folder
}


def _entries(package: Path) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(package) as archive:
        names = [i.filename for i in archive.infolist()]
        assert names == sorted(names)
        return {i.filename: i for i in archive.infolist()}


def _mode(info: zipfile.ZipInfo) -> int:
    return info.external_attr >> 16


def test_release_becomes_a_flat_reproducible_package(tmp_path: Path) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.xz", BLENDER)
    first = build_tool("blender", release, "--out", tmp_path / "one.zip")
    assert first.returncode == 0, first.stderr
    assert build_tool("blender", release, "--out", tmp_path / "two.zip").returncode == 0
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()

    entries = _entries(tmp_path / "one.zip")
    assert sorted(entries) == [
        "4.2/datafiles/README",
        "4.2/datafiles/colormanagement/config.ocio",
        "4.2/scripts/README",
        "4.2/scripts/colormanagement/config.ocio",
        "blender",
        "blender-softwaregl",
        "lib/libcycles.so",
        "lib/libcycles.so.4.2.3",
    ]
    assert all(stat.S_ISREG(_mode(info)) for info in entries.values())  # no symlinks
    assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in entries.values())
    for name in ("blender", "blender-softwaregl", "lib/libcycles.so"):
        assert stat.S_IMODE(_mode(entries[name])) == 0o755, name
    assert stat.S_IMODE(_mode(entries["4.2/scripts/README"])) == 0o644
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        assert archive.read("blender-softwaregl") == archive.read("blender")
        assert archive.read("4.2/scripts/README") == BLENDER[f"{TOP}/4.2/datafiles/README"]

    out = first.stdout
    # Up front: what the release is, and how much disk the build needs where.
    assert out.startswith(
        f"{TOP}.tar.xz: {release.stat().st_size} bytes, 10.0 KiB unpacked; the build needs "
        f"up to 20.0 KiB in {tmp_path}, and a copy of what its symlinks point to ("
    )
    size = (tmp_path / "one.zip").stat().st_size
    assert f"built {tmp_path / 'one.zip'}: 8 files, {size / 1024:.1f} KiB (" in out
    assert f"top folder {TOP}/ removed; 3 symlink(s) materialised" in out
    assert "0.0 MiB" not in out
    assert 'upload it as application package "blender", version "4.2.3"' in out
    assert "--application-name blender --version-name 4.2.3 --package-file" in out


def test_zip_and_folder_releases_give_the_same_bytes(tmp_path: Path) -> None:
    tar = build_tool("blender", write_tar(tmp_path / "r.tar.gz", BLENDER), "--out", tmp_path / "t")
    assert tar.returncode == 0, tar.stderr
    zipped = build_tool("blender", write_zip(tmp_path / "r.zip", BLENDER), "--out", tmp_path / "z")
    assert zipped.returncode == 0, zipped.stderr
    folder = write_folder(tmp_path / "unpacked", BLENDER)
    unpacked = build_tool("blender", folder, "--out", tmp_path / "f")
    assert unpacked.returncode == 0, unpacked.stderr
    expected = (tmp_path / "t").read_bytes()
    assert (tmp_path / "z").read_bytes() == expected
    assert (tmp_path / "f").read_bytes() == expected
    # The version is read from the archive's name, else from its top folder.
    assert 'version "4.2.3"' in tar.stdout and 'version "4.2.3"' in zipped.stdout


def test_bad_symlinks_are_refused_all_at_once(tmp_path: Path) -> None:
    release = write_tar(
        tmp_path / f"{TOP}.tar.xz",
        {
            **BLENDER,
            f"{TOP}/lib/libgone.so.1": "->libgone.so.1.0",
            f"{TOP}/lib/libsystem.so.1": "->/usr/lib/libsystem.so.1",
            f"{TOP}/4.2/escape": "->../../../etc",
            f"{TOP}/ping": "->pong",
            f"{TOP}/pong": "->ping",
            f"{TOP}/4.2/datafiles/up": "->..",
        },
    )
    result = build_tool("blender", release, "--out", tmp_path / "out.zip")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("build-tool: ERROR: ") for line in lines)
    for expected in (
        f"{TOP}/lib/libgone.so.1 -> libgone.so.1.0: points to {TOP}/lib/libgone.so.1.0, "
        "which is not in the archive (dangling)",
        f"{TOP}/lib/libsystem.so.1 -> /usr/lib/libsystem.so.1: points outside the archive",
        f"{TOP}/4.2/escape -> ../../../etc: points outside the archive",
        f"{TOP}/ping -> pong: is part of a symlink loop",
        f"{TOP}/4.2/datafiles/up -> ..: points to a folder that holds it (a loop)",
    ):
        assert any(expected in line for line in lines), expected
    assert not (tmp_path / "out.zip").exists()
    assert [p.name for p in tmp_path.iterdir()] == [release.name]  # no staging left


@pytest.mark.parametrize("name", ["../outside", "/tmp/absolute", f"{TOP}/../../outside"])
def test_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    release = write_tar(tmp_path / "evil.tar.xz", {**BLENDER, name: b"overwrite me\n"})
    result = build_tool("blender", release, "--out", tmp_path / "out" / "blender.zip")
    assert result.returncode == 3
    assert f"the entry {name!r} would be written outside the archive's folder" in result.stderr
    assert [p.name for p in tmp_path.rglob("*")] == ["evil.tar.xz"]  # nothing else made


def test_entry_inside_a_symlink_is_refused(tmp_path: Path) -> None:
    members = {**BLENDER, f"{TOP}/4.2/scripts/startup.py": b"import os\n"}
    result = build_tool("blender", write_tar(tmp_path / "r.tar.xz", members))
    assert result.returncode == 3
    assert (
        f"{TOP}/4.2/scripts/startup.py lies inside {TOP}/4.2/scripts, which the archive "
        "makes a symlink; extracting it would write through it"
    ) in result.stderr


def test_release_without_the_executable_is_refused(tmp_path: Path) -> None:
    shared_build = {
        "ffmpeg-7.1-linux64-gpl-shared/bin/ffmpeg": (b"\x7fELF", 0o755),
        "ffmpeg-7.1-linux64-gpl-shared/lib/libavcodec.so.61": ELF_LIBRARY,
    }
    release = write_tar(tmp_path / "ffmpeg-7.1-linux64-gpl-shared.tar.xz", shared_build)
    result = build_tool("ffmpeg", release, "--out", tmp_path / "ffmpeg.zip")
    assert result.returncode == 3
    assert "no ffmpeg executable at its top; found bin/ffmpeg" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ffmpeg.zip").exists()


@pytest.mark.parametrize(
    "package_id, members, message",
    [
        (
            "blender",
            {**BLENDER, f"{TOP}/\udcffweird.txt": b"x"},
            "the file name b'\\xffweird.txt' is not UTF-8, and a zip holds UTF-8 names",
        ),
        ("ffmpeg", {f"{TOP}/blender": b"no ffmpeg here"}, "no ffmpeg executable at its top"),
    ],
)
def test_a_refused_release_leaves_no_folder_behind(
    tmp_path: Path, package_id: str, members: dict[str, Spec], message: str
) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.gz", members)
    result = build_tool(package_id, release, "--out", tmp_path / "out" / "a" / "b.zip")
    assert result.returncode == 3, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.rglob("*")] == [release.name]


def test_links_that_multiply_the_release_are_refused(tmp_path: Path) -> None:
    # Ten links in each of six folders, each to the next folder: a million files.
    members: dict[str, Spec] = {f"{TOP}/blender": (b"#!/bin/sh\n", 0o755)}
    for level in range(6):
        members[f"{TOP}/d{level}/"] = None
        members.update({f"{TOP}/d{level}/l{i}": f"->../d{level + 1}" for i in range(10)})
    members[f"{TOP}/d6/f"] = b"x"
    release = write_tar(tmp_path / f"{TOP}.tar.gz", members)
    result = build_tool("blender", release, "--out", tmp_path / "out" / "blender.zip")
    assert result.returncode == 3
    assert (
        "its links to folders would make the builder walk more than 10,000 entries (the "
        "release itself has 2 files, 11 bytes, 71 entries)"
    ) in result.stderr
    assert [p.name for p in tmp_path.rglob("*")] == [release.name]


def test_static_ffmpeg_build(tmp_path: Path) -> None:
    top = "ffmpeg-7.0.2-amd64-static"
    release = write_tar(
        tmp_path / "ffmpeg-release-amd64-static.tar.xz",
        {
            f"{top}/ffmpeg": (b"\x7fELF ffmpeg", 0o755),
            f"{top}/ffprobe": (b"\x7fELF ffprobe", 0o644),
            f"{top}/model/other_models": None,
            f"{top}/readme.txt": b"static build\n",
        },
    )
    result = build_tool("ffmpeg", release, "--out", tmp_path / "ffmpeg.zip")
    assert result.returncode == 0, result.stderr
    # The archive's name has no version; its top folder has.
    assert 'application package "ffmpeg", version "7.0.2"' in result.stdout
    assert "note: ffprobe was not executable in the release; made executable" in result.stdout
    entries = _entries(tmp_path / "ffmpeg.zip")
    assert sorted(entries) == ["ffmpeg", "ffprobe", "readme.txt"]
    assert stat.S_IMODE(_mode(entries["ffprobe"])) == 0o755


@pytest.mark.parametrize(
    "names, version",
    [
        (("blender-4.2.3-linux-x64.tar.xz",), "4.2.3"),
        (("blender-4.3.0-alpha+main.1a2b3c-linux.x86_64-release.tar.xz",), "4.3.0-alpha"),
        (("ffmpeg-release-amd64-static.tar.xz", "ffmpeg-7.0.2-amd64-static"), "7.0.2"),
        (("ffmpeg-n7.1-latest-linux64-gpl-7.1.tar.xz",), "7.1"),
        (("ffmpeg-git-amd64-static.tar.xz", "ffmpeg-git-20240629-amd64-static"), None),
        (("blender.zip",), None),
    ],
)
def test_version_from_the_release_name(names: tuple[str, ...], version: str) -> None:
    package_id = names[0].split("-")[0].split(".")[0]
    assert version_from_name(package_id, *names) == version


def test_resolve_follows_links_like_the_kernel() -> None:
    entries = {
        "": Entry(Kind.DIR),
        "a": Entry(Kind.DIR),
        "a/b": Entry(Kind.DIR),
        "a/b/file": Entry(Kind.FILE),
        "a/up": Entry(Kind.LINK, target=".."),
        "a/chain": Entry(Kind.LINK, target="up/a/b/file"),
        "a/through-file": Entry(Kind.LINK, target="b/file/x"),
        "a/abs": Entry(Kind.LINK, target="/a/b/file"),
    }
    assert resolve(entries, "a/chain") == "a/b/file"
    assert resolve(entries, "a/up/a/up/a/b") == "a/b"
    assert resolve(entries, "a/abs", absolute_from_top=True) == "a/b/file"
    with pytest.raises(LinkProblem, match="points outside the archive"):
        resolve(entries, "a/abs")
    with pytest.raises(LinkProblem, match="a file, as if it were a folder"):
        resolve(entries, "a/through-file")
    with pytest.raises(LinkProblem, match="outside the release's folder a/b/"):
        resolve(entries, "a/up", within="a/b")


def test_the_builder_puts_libraries_where_the_node_looks_for_them() -> None:
    assert SYSTEM_LIBS_DIR == NODE_SYSTEM_LIBS_DIR


def test_reading_tells_how_far_it_got_within_a_large_file(tmp_path: Path) -> None:
    noise = os.urandom(8 << 20)
    release = write_tar(tmp_path / f"{TOP}.tar.gz", {f"{TOP}/blender": (noise, 0o755)})
    total = release.stat().st_size
    told: list[tuple[int, int]] = []
    (tmp_path / "staging").mkdir()
    tree = read_tar(release, Staging(tmp_path / "staging"), meter=lambda *m: told.append(m))
    assert tree.entries[f"{TOP}/blender"].size == len(noise)
    # Told as each chunk of the one file was read, not only once it was whole.
    assert len({done for done, _ in told if done < total}) >= 4
    assert told[-1] == (total, total)


def test_a_mistake_in_the_libraries_is_said_before_the_release_is_unpacked(
    tmp_path: Path,
) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.xz", BLENDER)
    notes = write_folder(tmp_path / "notes", {"README.txt": b"not a library\n"})
    result = build_tool("blender", release, "--libs", notes, "--out", tmp_path / "b.zip")
    assert result.returncode == 3
    assert f"--libs {notes}: " in result.stderr
    assert result.stdout == ""  # not even the line said before unpacking
