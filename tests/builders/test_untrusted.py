"""packaging/build-tool against hostile and damaged downloads: link bombs, archives
nested too deep, zips Python cannot read or whose names are not UTF-8, streams
whose checksums fail, archives cut short, files declared far larger than the
archive, and an output path that leads elsewhere. Each is refused with one clear
message per problem, no traceback, and nothing written."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.releases import Spec, build_tool, patch_zip, write_folder, write_tar, write_zip

TOP = "blender-4.2.3-linux-x64"
BLENDER: dict[str, Spec] = {
    f"{TOP}/blender": (b"#!/bin/sh\necho 'Blender 4.2.3'\n", 0o755),
    f"{TOP}/4.2/datafiles/README": b"Blender's data\n",
}


def _refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith("build-tool: ERROR: ") for line in result.stderr.splitlines())
    for text in expected:
        assert text in result.stderr, text


def _only(folder: Path, *names: str) -> None:
    """Nothing but ``names`` in ``folder``: no zip, no staging, no temporary file."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_a_link_bomb_without_files_is_refused(tmp_path: Path) -> None:
    # Nine levels of ten links to the next folder, and no file at all: 10**9
    # folders to copy, which no cap on files or bytes would ever stop.
    members: dict[str, Spec] = {f"{TOP}/blender": (b"#!/bin/sh\n", 0o755)}
    for level in range(9):
        members[f"{TOP}/d{level}/"] = None
        members.update({f"{TOP}/d{level}/l{i}": f"->../d{level + 1}" for i in range(10)})
    members[f"{TOP}/d9/"] = None
    release = write_tar(tmp_path / f"{TOP}.tar.gz", members)
    assert release.stat().st_size < 1000
    result = build_tool("blender", release, "--out", tmp_path / "out.zip")
    _refused(result, "its links to folders would make the builder walk more than 10,000 entries")
    _only(tmp_path, release.name)


def test_an_archive_nested_too_deep_is_refused(tmp_path: Path) -> None:
    deep = f"{TOP}/" + "a/" * 1100 + "file"
    release = write_tar(tmp_path / f"{TOP}.tar.xz", {**BLENDER, deep: b"deep down\n"})
    result = build_tool("blender", release, "--out", tmp_path / "out.zip")
    _refused(result, "folders deep, more than 128: no real release nests so deep; refused")
    _only(tmp_path, release.name)


def test_a_folder_nested_too_deep_is_refused(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / TOP, {"blender": (b"#!/bin/sh\n", 0o755)})
    for level in range(1, 1101):  # one by one: mkdir(parents=True) would recurse too deep
        (folder / "/".join(["a"] * level)).mkdir()
    try:
        result = build_tool("blender", folder, "--out", tmp_path / "out.zip")
        _refused(result, "folders deep, more than 128")
        _only(tmp_path, TOP)
    finally:  # removed from the bottom up: a recursive removal would be too deep
        for level in range(1100, 0, -1):
            (folder / "/".join(["a"] * level)).rmdir()


def _zipped(tmp_path: Path, extra: str) -> Path:
    members = {**BLENDER, f"{TOP}/{extra}": b"some data\n" * 100}
    return write_zip(tmp_path / f"{TOP}.zip", members)


@pytest.mark.parametrize(
    "flags, method, message",
    [
        (0x1, -1, f"{TOP}/secret.txt is encrypted: unzip it with its password"),
        (
            0,
            9,
            f"{TOP}/secret.txt is compressed with Deflate64 (as Windows Explorer writes large "
            "zips), which Python cannot read: unzip it (unzip, 7z) and pass the folder",
        ),
    ],
)
def test_a_zip_python_cannot_read_is_refused(
    tmp_path: Path, flags: int, method: int, message: str
) -> None:
    release = patch_zip(
        _zipped(tmp_path, "secret.txt"), f"{TOP}/secret.txt", flags=flags, method=method
    )
    result = build_tool("blender", release, "--out", tmp_path / "out.zip")
    _refused(result, message)
    _only(tmp_path, release.name)


def test_a_zip_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    # Without the UTF-8 flag: zipfile would read it as code page 437 ("cafΘ").
    release = patch_zip(
        _zipped(tmp_path, "cafX.txt"),
        f"{TOP}/cafX.txt",
        raw_name=f"{TOP}/caf\xe9.txt".encode("latin-1"),
    )
    result = build_tool("blender", release, "--out", tmp_path / "out.zip")
    _refused(
        result, f"the file name b'{TOP}/caf\\xe9.txt' is not UTF-8, and a zip holds UTF-8 names"
    )
    # With the flag, but bytes that are not UTF-8 all the same.
    patch_zip(release, f"{TOP}/caf\xe9.txt".encode("latin-1"), flags=0x800)
    result = build_tool("blender", release, "--out", tmp_path / "out.zip")
    _refused(result, f"the file name b'{TOP}/caf\\xe9.txt' is marked as UTF-8 but is not")
    _only(tmp_path, release.name)


def test_a_zip_name_in_utf8_without_the_flag_is_taken_as_utf8(tmp_path: Path) -> None:
    release = patch_zip(
        _zipped(tmp_path, "cafXX.txt"), f"{TOP}/cafXX.txt", raw_name=f"{TOP}/café.txt".encode()
    )
    result = build_tool("blender", release, "--out", tmp_path / "out.zip")
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "out.zip") as package:
        assert "café.txt" in package.namelist()


def _tar_bytes(members: dict[str, Spec]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, spec in members.items():
            data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
            assert isinstance(data, bytes)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_tar_gz_whose_data_fails_its_crc_is_refused(tmp_path: Path) -> None:
    # Stored, not compressed: a byte of the file can be changed in place, and the
    # stream stays valid; only the gzip trailer's CRC tells.
    original = gzip.compress(_tar_bytes(BLENDER), compresslevel=0, mtime=0)
    assert original.count(b"Blender 4.2.3") == 1
    release = tmp_path / f"{TOP}.tar.gz"
    release.write_bytes(original.replace(b"Blender 4.2.3", b"Blender 6.6.6"))
    result = build_tool("blender", release, "--out", tmp_path / "out.zip")
    _refused(result, f"{release}: cannot be read as a tar archive (CRC check failed")
    _only(tmp_path, release.name)


def test_a_tar_cut_at_a_member_boundary_is_refused(tmp_path: Path) -> None:
    members: dict[str, Spec] = {
        "ffmpeg-7.0.2-amd64-static/ffmpeg": (b"\x7fELF ffmpeg", 0o755),
        "ffmpeg-7.0.2-amd64-static/ffprobe": (b"\x7fELF ffprobe", 0o755),
    }
    whole = _tar_bytes(members)
    release = tmp_path / "ffmpeg-7.0.2-amd64-static.tar"
    release.write_bytes(whole[: 2 * tarfile.BLOCKSIZE])  # ffmpeg's header and data
    result = build_tool("ffmpeg", release, "--out", tmp_path / "out.zip")
    _refused(result, f"{release}: ends without the end-of-archive marker, at 1,024 bytes")
    _only(tmp_path, release.name)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to make a sparse member")
def test_a_file_declared_larger_than_the_caps_is_refused_before_any_byte_is_kept(
    tmp_path: Path,
) -> None:
    folder = write_folder(tmp_path / "release" / TOP, BLENDER)
    with (folder / "huge.img").open("wb") as huge:
        huge.truncate(40 << 30)  # 40 GiB, all of it a hole
    release = tmp_path / f"{TOP}.tar.xz"
    subprocess.run(
        ["tar", "--sparse", "-cJf", str(release), "-C", str(tmp_path / "release"), TOP],
        check=True,
    )
    shutil.rmtree(tmp_path / "release")
    assert release.stat().st_size < 4096
    # Were the caps checked too late, the file size limit would fail the build.
    result = build_tool("blender", release, "--out", tmp_path / "out.zip", file_size_limit=1 << 26)
    _refused(
        result,
        f"{release}: {TOP}/huge.img is a file of 42,949,672,960 bytes, which with the ",
        "passes the 16 GiB a release may hold: refused before unpacking it",
    )
    _only(tmp_path, release.name)


def test_a_full_disk_names_where(tmp_path: Path) -> None:
    release = write_tar(
        tmp_path / f"{TOP}.tar.xz", {**BLENDER, f"{TOP}/noise": os.urandom(1 << 20)}
    )
    out = tmp_path / "out" / "blender.zip"
    result = build_tool("blender", release, "--out", out, file_size_limit=1 << 18)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"build-tool: ERROR: {out.parent}: File too large\n"
    _only(tmp_path, release.name)


def test_a_link_planted_where_the_zip_is_written_is_not_followed(tmp_path: Path) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.xz", BLENDER)
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    out = tmp_path / "dist" / "blender.zip"
    out.parent.mkdir()
    (out.parent / "blender.zip.tmp").symlink_to(victim)
    out.symlink_to(victim)
    result = build_tool("blender", release, "--out", out)
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "not yours\n"
    assert not out.is_symlink() and zipfile.ZipFile(out).testzip() is None
    _only(out.parent, "blender.zip", "blender.zip.tmp")


def test_the_output_cannot_be_an_input(tmp_path: Path) -> None:
    release = write_tar(tmp_path / f"{TOP}.tar.xz", BLENDER)
    download = release.read_bytes()
    result = build_tool("blender", release, "--out", release)
    _refused(result, f"--out {release}: that is the input {release}; write the zip elsewhere")
    assert release.read_bytes() == download
    folder = write_folder(tmp_path / "unpacked", BLENDER)
    result = build_tool("blender", folder, "--out", folder / "blender.zip")
    _refused(result, f"--out {folder / 'blender.zip'}: inside the input folder {folder}")
    _only(tmp_path, release.name, "unpacked")
