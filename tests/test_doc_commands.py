"""Every command block of the README and of docs/ runs, as written, on this checkout
after ``./dev main``: in bash, from the checkout's top, with the PATH a new user's
shell has (the checkout's .venv not on it), and fails the test if it exits non-zero
or prints a traceback.

A command block is a fenced block whose language is ``sh`` (or ``bash``, ``shell``).
One that cannot run here says so on the line just before its fence::

    <!-- not run: needs an Azure Batch account -->

and that reason is listed with the test's results (``-rs``). Blocks without a
language (a synopsis, sample output) and blocks of data (``json``, ``yaml``) are not
commands. Each block runs with every line under ``set -e``, a fresh ``HOME`` and
``TMPDIR``, and a time limit.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMANDS = ("sh", "bash", "shell")
NOT_RUN = re.compile(r"^\s*<!-- not run: (.+?) -->\s*$")
FENCE = re.compile(r"^(\s*)```(\S*)")
TIME_LIMIT = 300  # seconds a block may take (./dev main takes about 20)
VENV = REPO / ".venv"


@dataclass(frozen=True)
class Block:
    """One fenced command block: where it is, its text, why it does not run."""

    page: Path
    line: int  # of the opening fence, from 1
    text: str
    not_run: str  # the reason; "" for a block that runs

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO).as_posix()}:{self.line}"


def command_blocks(page: Path) -> list[Block]:
    """Every command block of ``page``, indentation (a list item's) removed."""
    lines = page.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.groups()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        if language in COMMANDS:
            marked = NOT_RUN.match(lines[index - 1]) if index else None
            body = "\n".join(line[len(indent) :] for line in lines[index + 1 : end])
            blocks.append(Block(page, index + 1, body, marked.group(1) if marked else ""))
        index = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in command_blocks(page)]


def _users_path() -> str:
    """PATH as a new user's shell has it: without this checkout's .venv (or any
    activated one)."""
    active = os.environ.get("VIRTUAL_ENV")
    kept = [
        entry
        for entry in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if entry
        and not Path(entry).resolve().is_relative_to(VENV.resolve())
        and not (active and Path(entry).resolve().is_relative_to(Path(active).resolve()))
    ]
    return os.pathsep.join(kept)


def test_the_blocks_are_found_and_marked_with_a_reason() -> None:
    assert any(b.page.name == "README.md" and "./dev main" in b.text for b in BLOCKS)
    # A marker must sit right before a command block's fence, never astray.
    for page in PAGES:
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines[:-1], 1):
            if NOT_RUN.match(line):
                following = FENCE.match(lines[number])
                assert following and following.group(2) in COMMANDS, f"{page.name}:{number}"


def problems(block: Block, scratch: Path) -> list[str]:
    """Run ``block`` as a new user would; what went wrong (nothing: an empty list)."""
    home, temp = scratch / "home", scratch / "tmp"
    home.mkdir()
    temp.mkdir()
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not key.startswith("PYTEST")
    }
    environ.update(PATH=_users_path(), HOME=str(home), TMPDIR=str(temp))
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.text],
        cwd=REPO,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
        check=False,
    )
    output = result.stdout + result.stderr
    found = []
    if result.returncode != 0:
        found.append(f"{block.name} exited {result.returncode}")
    if "Traceback (most recent call last)" in output:
        found.append(f"{block.name} printed a traceback")
    return [f"{problem}:\n{output[-3000:]}" for problem in found]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_the_command_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    if block.not_run:
        pytest.skip(f"{block.name}: {block.not_run}")
    if not list(VENV.glob(".installed-*")):
        pytest.skip("the checkout has no .venv yet: the blocks run after ./dev main")
    assert not problems(block, tmp_path)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("true\nfalse\ntrue", "exited 1"),  # any line that fails fails the block
        ("false | true", "exited 1"),
        ("python3 -c 'raise KeyError(1)' || true", "printed a traceback"),
        ("node-agent-nowhere --version", "exited 127"),  # not on a new user's PATH
    ],
)
def test_a_block_that_fails_or_prints_a_traceback_fails(
    text: str, problem: str, tmp_path: Path
) -> None:
    found = problems(Block(REPO / "README.md", 1, text, ""), tmp_path)
    assert len(found) == 1 and f"README.md:1 {problem}" in found[0]
