"""The operator's install path, as the README gives it (``pip install './[fleet]'`` in
a checkout), into a clean virtual environment: the command works, names its licence,
and without the extra says the very command that adds it.

Offline: the dependencies come from the wheels ``./dev`` keeps in
``.venv/wheelhouse`` (made from pip's cache when it makes .venv), never the index.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / ".venv" / "wheelhouse"

pytestmark = pytest.mark.skipif(
    not WHEELHOUSE.is_dir(),
    reason="no .venv/wheelhouse to install from offline: ./dev makes it (./dev test)",
)


def _checkout(where: Path) -> Path:
    """What a clone holds that the install reads (a copy: the build writes beside it)."""
    copy = where / "node-agent"
    shutil.copytree(
        REPO / "node_agent", copy / "node_agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, copy / name)
    return copy


def _run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` in ``cwd``: never the repository, whose node_agent a ``-c`` would import."""
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )


def test_the_operators_tools_install_from_a_checkout_into_a_clean_venv(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python, command = venv / "bin" / "python", venv / "bin" / "node-agent"
    # This environment's pip, working on the clean one (it has none of its own).
    pip = (sys.executable, "-m", "pip", "--python", python, "install")
    installed = _run(*pip, "--no-index", "--find-links", WHEELHOUSE, "./[fleet]", cwd=checkout)
    assert installed.returncode == 0, installed.stderr

    version = _run(command, "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, "node-agent 0.1.0\n"), version.stderr
    fleet = _run(command, "fleet", "--help", cwd=tmp_path)
    assert fleet.returncode == 0 and "scale" in fleet.stdout, fleet.stderr
    # Without the Azure SDK, fleet names the fix: this environment's Python installing
    # from a checkout (an installed copy cannot know where the operator's is).
    without = _run(
        python,
        "-c",
        "import sys; sys.modules['azure.batch'] = None; from node_agent.cli import main; "
        "sys.exit(main(['fleet', 'status', '--pool', 'p']))",
        cwd=tmp_path,
    )
    assert without.returncode == 3 and "Traceback" not in without.stderr, without.stderr
    fix = f"{python} -m pip install '<your node-agent checkout>[fleet]'"
    assert f"needs azure.batch: {fix} (README: Installing the operator's tools)" in without.stderr

    # What was installed: node_agent and its metadata, licence included; the
    # checkout's tests and builders stay in the checkout.
    listed = _run(
        python,
        "-c",
        "from importlib.metadata import metadata, files; "
        "print(metadata('node-agent')['License-Expression']); "
        "print('\\n'.join(str(f) for f in files('node-agent')))",
        cwd=tmp_path,
    )
    license_expression, *files = listed.stdout.splitlines()
    assert license_expression == "GPL-3.0-or-later", listed.stderr
    outside = {name for name in files if name.startswith("..")}
    assert {Path(name).name for name in outside} == {"node-agent"}  # the command in bin/
    assert {name.split("/")[0] for name in set(files) - outside} == {
        "node_agent",
        "node_agent-0.1.0.dist-info",
    }
    assert "node_agent/fleet/command.py" in files
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in files), files
