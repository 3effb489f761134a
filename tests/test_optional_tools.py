"""On a machine without a Python built with lzma or without the openssl command, the
tests that need them skip, saying what is missing and how to get it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# pytest on a Python whose lzma is gone (as if built without liblzma-dev).
WITHOUT_LZMA = (
    "import sys; sys.modules['lzma'] = sys.modules['_lzma'] = None; import pytest; "
    "sys.exit(pytest.main(sys.argv[1:]))"
)


def test_tests_needing_lzma_or_openssl_skip_with_the_reason(tmp_path: Path) -> None:
    makes_xz = tmp_path / "test_makes_xz.py"
    makes_xz.write_text(
        "import tarfile\n\n"
        "def test_writes_a_tar_xz(tmp_path):\n"
        "    tarfile.open(tmp_path / 'r.tar.xz', 'w:xz').close()\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_LZMA,
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.optional_tools",
            "tests/builders/test_toolpkg.py",  # imports the .tar.xz reader
            "tests/bootstrap/test_libraries.py::test_parse_ldd",  # lzma-free: runs
            str(makes_xz),  # fails for want of lzma as it runs
            "tests/sim/test_standin_batch.py::test_entra_bearer_tokens_over_tls",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": str(tmp_path)},  # no openssl on it
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 3 skipped" in result.stdout, result.stdout
    assert "test_toolpkg.py:0: this Python has no lzma, which .tar.xz archives need" in (
        result.stdout
    )
    assert "test_makes_xz.py:2: this Python has no lzma" in result.stdout
    assert "no openssl command to make a certificate (Debian/Ubuntu: apt-get install openssl)" in (
        result.stdout
    )
