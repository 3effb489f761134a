"""The packaging scripts as a new user runs them: on a Python that lacks their modules
they run on the checkout's .venv, or say what is missing and how to get it (exit 3,
no traceback); simulate-node's hint for another shell is a command that works."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.packages import REPO

# build-tool needs nothing but the standard library: it runs on any python3
# (tests/builders/test_builder_cli.py runs it with python3 -S).
SCRIPTS = ("simulate-node", "make-pool")
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with nothing installed: the system's on a fresh machine."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv / "bin" / "python"


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="no .venv: ./dev makes it")
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_on_a_python_without_its_modules_runs_on_the_checkouts_venv(
    script: str, bare_python: Path
) -> None:
    result = subprocess.run(
        [str(bare_python), str(REPO / "packaging" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script}")
    assert f"{script}: {bare_python} (Python " in result.stderr
    assert f"; running on {VENV_PYTHON}" in result.stderr


def test_without_the_checkouts_venv_a_script_says_what_is_missing(
    bare_python: Path, tmp_path: Path
) -> None:
    # A checkout without .venv: the helper beside a script that needs PyYAML.
    packaging = tmp_path / "checkout" / "packaging"
    packaging.mkdir(parents=True)
    shutil.copy2(REPO / "packaging" / "interpreter.py", packaging)
    script = packaging / "make-it"
    script.write_text(
        "from interpreter import require\nrequire(__file__, 'yaml', 'psutil')\nprint('ran')\n"
    )
    result = subprocess.run(
        [str(bare_python), str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 3 and result.stdout == "", result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"make-it: needs yaml, psutil, which {bare_python} (Python ")
    assert f"run `./dev main` once in {tmp_path / 'checkout'}" in result.stderr
    assert f"{bare_python} -m pip install '{tmp_path / 'checkout'}[fleet]'" in result.stderr


def _users_path() -> str:
    venv = (REPO / ".venv").resolve()
    entries = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and not Path(e).resolve().is_relative_to(venv))


def test_the_pools_hint_for_another_shell_works_as_printed(package: Path, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    command = [sys.executable, str(REPO / "packaging" / "simulate-node"), "--nodes", "2"]
    simulator = subprocess.Popen(
        [*command, "--package", str(package), "--root", str(tmp_path / "pool")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    try:
        assert simulator.stdout is not None
        hint = ""
        for line in simulator.stdout:
            if line.startswith("in another shell: "):
                hint = line[len("in another shell: ") :].strip()
                break
        assert hint.startswith("set -a; . "), hint
        # As the user pastes it: in bash, from the checkout, without .venv on PATH.
        environ = {**os.environ, "PATH": _users_path()}
        environ.pop("VIRTUAL_ENV", None)

        def shown() -> subprocess.CompletedProcess[str] | None:
            result = subprocess.run(
                ["bash", "-c", hint],
                cwd=REPO,
                env=environ,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            return result if result.returncode == 0 else None

        result = wait_until(shown, 60, "the hint's fleet status to exit 0")
        assert "pool spot-render-v3: 2 nodes" in result.stdout, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    finally:
        simulator.send_signal(signal.SIGINT)
        simulator.communicate(timeout=120)
    assert simulator.returncode == 0
