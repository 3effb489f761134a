"""``./dev`` on a fresh machine: it checks what it needs before making .venv (a
Python 3.9+ with venv, lzma for ``main``) and says how to get what is missing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A Python that lacks the modules named after it: the real one, told they are gone.
WRAPPER = """#!/bin/sh
exec {python} -c "import sys; [sys.modules.__setitem__(m, None) for m in {gone!r}]; \\
exec(compile(sys.argv[1], '-c', 'exec'))" "$2"
"""


def _checkout(where: Path) -> Path:
    """./dev and what it reads, without the checkout's .venv."""
    copy = where / "checkout"
    copy.mkdir()
    for name in ("dev", "pyproject.toml"):
        shutil.copy2(REPO / name, copy / name)
    return copy


def _python_without(where: Path, *gone: str) -> Path:
    path = where / f"python-without-{'-'.join(gone)}"
    path.write_text(WRAPPER.format(python=sys.executable, gone=list(gone)))
    path.chmod(0o755)
    return path


def _dev(checkout: Path, command: str, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["./dev", command],
        cwd=checkout,
        env={"PATH": os.environ["PATH"], "PYTHON": str(python), "HOME": str(checkout)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_venv_it_says_to_install_python3_venv(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    result = _dev(checkout, "check", _python_without(tmp_path, "ensurepip"))
    assert result.returncode == 1
    assert "cannot make a virtual environment (no venv/ensurepip module)" in result.stderr
    assert "sudo apt-get install python3-venv (or python3." in result.stderr
    assert not (checkout / ".venv").exists()  # nothing half-made


def test_without_python_it_says_how_to_name_one(tmp_path: Path) -> None:
    result = _dev(_checkout(tmp_path), "test", tmp_path / "no-such-python3")
    assert result.returncode == 1
    assert "install Python 3.9 or newer" in result.stderr and "PYTHON=" in result.stderr


def test_main_without_lzma_says_which_python_to_use(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    # A .venv made already (its stamp current), on a Python built without lzma.
    venv_bin = checkout / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(_python_without(tmp_path, "lzma", "_lzma"))
    digest = hashlib.sha256((checkout / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (checkout / ".venv" / f".installed-{digest}").touch()
    result = _dev(checkout, "main", Path(sys.executable))
    assert result.returncode == 1
    assert "Python was built without lzma, which reading .tar.xz releases needs" in result.stderr
    assert "PYTHON=/usr/bin/python3 ./dev" in result.stderr
