"""File-system writes that never leave anything half-done.

A file is written to a temporary name in the same directory, fsynced, then renamed
over the target; a symlink, or a folder of symlinks, is made under a temporary name
and renamed likewise.
``rename`` replaces whatever is at the target, a planted symlink included, without
following it. On failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from typing import BinaryIO, Optional


def _temp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(temp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temp)


def atomic_write(path: str, data: bytes, mode: int, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) atomically and, unless
    ``durable`` is off, durably (fsynced, so it survives a crash of the machine)."""
    temp = _temp_name(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise  # not ours to remove
    except BaseException:
        # Some file systems create the entry and then fail (ENOSPC, EDQUOT).
        _discard(temp)
        raise
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        _discard(temp)
        raise
    if durable:
        _fsync_dir(os.path.dirname(path))


def atomic_symlink(target: str, link: str) -> None:
    """Point ``link`` at ``target``, replacing an existing symlink atomically."""
    temp = _temp_name(link)
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        _discard(temp)
        raise
    _fsync_dir(os.path.dirname(link))


def atomic_link_dir(path: str, links: Sequence[tuple[str, str]]) -> None:
    """Create the folder ``path`` (mode 0755) holding the symlinks ``links``
    (name, target), complete before it appears under its name."""
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    temp = _temp_name(path)
    os.mkdir(temp)
    try:
        os.chmod(temp, 0o755)  # noqa: S103 (tasks run as other users; links are not secret)
        for name, target in links:
            os.symlink(target, os.path.join(temp, name))
        _fsync_dir(temp)
        os.rename(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_dir(parent)


class Unsuitable(ValueError):
    """Not a file to read: a FIFO, a device or a directory (reading could hang or
    never end), or larger than the caller's limit."""


def _read_limited(handle: BinaryIO, limit: Optional[int]) -> bytes:
    if limit is None:
        return handle.read()
    # st_size can lie (/proc files say 0): read one byte past the limit to know.
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise Unsuitable(f"is larger than {limit // 1024} KiB, far more than it should hold")
    return data


def read_bounded(path: str, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed): at most
    ``limit`` of them. Raises ``OSError`` (missing, unreadable) or ``Unsuitable``
    (not a regular file, larger than ``limit``); never blocks on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unsuitable("is not a regular file (a FIFO, a device or a directory)")
        return _read_limited(handle, limit)


def read_regular_file(path: str, limit: Optional[int] = None) -> Optional[bytes]:
    """The bytes of the regular file at ``path``, never through a symlink.

    None when nothing, a symlink or something other than a regular file is there (or
    the path is too long to exist); any other failure (permission denied, I/O error)
    is raised, because treating an unreadable file as absent could mean overwriting
    credentials. With ``limit``, a larger file raises ``Unsuitable``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _read_limited(handle, limit)
