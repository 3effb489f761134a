"""The command line: ``node-agent env``, env files, exit codes, no tracebacks, no secrets."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from node_agent import __version__, usage
from node_agent.cli import build_parser, main
from node_agent.common.errors import EXIT_INVALID, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
from node_agent.config.specs import SPECS
from node_agent.runtime.state import STATE_SCHEMA, AgentState, write_state
from tests.helpers import AGENT_LINE, AZ_ENV, BROKEN_ENVS

REPO = Path(__file__).resolve().parent.parent
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.not-a-real-token.c2lnbmF0dXJl"


def _run(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else {"PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_env_summary_of_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--env-file", str(AZ_ENV / "seed.env")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "flamenco-worker  2.2.1, default" in out
    assert "tvm-383584635_1-20190115t092314z, dedicated" in out


def test_env_json_has_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--json", "--env-file", str(AZ_ENV / "newer_spot.env")]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {
        "schema",
        "account",
        "pool_id",
        "node",
        "task",
        "certificates_dir",
        "reserved_disk_space",
        "packages",
        "extra",
        "warnings",
    }
    assert doc["schema"] == 2
    assert doc["warnings"] == []
    assert doc["reserved_disk_space"] == {"task_bytes": 10**9, "agent_bytes": 500 * 2**20}
    assert doc["node"]["is_spot"] is True
    assert doc["task"]["user_identity"] == "PoolNonAdmin"
    assert doc["packages"][2] == {
        "id": "flamenco-worker",
        "version": "3.5.2",
        "is_default": True,
        "path": "/mnt/resource/batch/tasks/applications/flamenco-worker3.5.22024-09-30-09-58",
        "variables": [
            "AZ_BATCH_APP_PACKAGE_flamenco_worker",
            "AZ_BATCH_APP_PACKAGE_flamenco_worker_3_5_2",
        ],
    }
    assert doc["extra"]["AZ_BATCH_AUTHENTICATION_TOKEN"] == "<redacted>"


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_secrets_never_printed(json_flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    main(["env", *json_flag, "--env-file", str(AZ_ENV / "newer_spot.env")])
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    assert "not-a-real-token" not in captured.out + captured.err


def test_env_file_wins_over_process_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AZ_BATCH_POOL_ID", "from-process")
    monkeypatch.setenv("AZ_BATCH_SOMETHING_NEW", "from-process")
    assert main(["env", "--json", "--env-file", str(AZ_ENV / "seed.env")]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["pool_id"] == "je-moeder-47"
    assert doc["extra"] == {"AZ_BATCH_SOMETHING_NEW": "from-process"}


def test_broken_env_file_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("# fine\nAZ_BATCH_POOL_ID=x\nthis is not an assignment\n=nameless\n")
    assert main(["env", "--env-file", str(bad)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert f"{bad}:3: expected NAME=VALUE" in err
    assert f"{bad}:4: expected NAME=VALUE" in err


def test_missing_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--env-file", str(tmp_path / "nope.env")]) == EXIT_INVALID
    assert "No such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize("path", [*BROKEN_ENVS[:3], BROKEN_ENVS[-1]], ids=lambda p: p.stem)
def test_broken_env_through_the_real_command(path: Path) -> None:
    result = _run("env", "--env-file", str(path))
    assert result.returncode == EXIT_INVALID
    assert "Traceback" not in result.stderr
    first = AGENT_LINE.match(result.stderr.encode())
    assert first is not None and first.group(2) == b"ERROR", result.stderr
    assert result.stderr[first.end() :].startswith("invalid Batch environment")
    assert result.stdout == ""


def test_no_batch_environment_at_all() -> None:
    result = _run("env")
    assert result.returncode == EXIT_INVALID
    assert "AZ_BATCH_NODE_ROOT_DIR: is not set" in result.stderr
    assert "AZ_BATCH_NODE_SHARED_DIR: is not set" in result.stderr
    assert "AZ_BATCH_NODE_ID" not in result.stderr  # only a warning
    assert "Traceback" not in result.stderr


def test_usage_error_exit_code() -> None:
    assert _run("no-such-command").returncode == EXIT_USAGE


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (["--timestamps"], "true"),
        (["--timestamps", "false"], "false"),
        (["--watch-events"], "true"),
        (["--watch-events", "off"], "off"),
        (["--ack-events", "false"], "false"),
        (["--forget-worker"], "true"),
        (["--forget-worker", "auto"], "auto"),
        (["--install-system-packages", "--timestamps"], "true"),
        ([], None),
    ],
)
def test_every_boolean_option_takes_its_value_optionally(
    argv: list[str], value: Optional[str]
) -> None:
    args = build_parser().parse_args(["run", *argv])
    flag = argv[0] if argv else "--timestamps"
    assert getattr(args, flag[2:].replace("-", "_")) == value


def _help(*command: str) -> str:
    """A command's --help, its whitespace made single spaces (argparse wraps lines)."""
    result = _run(*command, "--help")
    assert result.returncode == EXIT_OK and "Traceback" not in result.stderr, result.stderr
    return result.stdout


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", ["run", "bootstrap"])
def test_settings_help_shows_every_default_and_variable_from_the_specs(command: str) -> None:
    text = _flat(_help(command))
    for spec in SPECS:
        assert f"{spec.flag} " in text, spec.key
        assert f"(default: {spec.default_text()}; env {spec.env})" in text, spec.key
    assert "an option given twice counts once, the last one" in text
    assert "--manager-url URL" in text and "--log-max-size SIZE" in text
    assert "--forget-worker [auto|true|false]" in text


@pytest.mark.parametrize("command", ["", "env", "bootstrap", "run", "status", "doctor"])
def test_every_command_help_ends_with_its_exit_codes_and_a_working_example(
    command: str,
) -> None:
    text = _help(*([command] if command else []))
    codes_part, _, example_part = text.partition("\nexample:\n")
    listed = [int(code) for code in re.findall(r"^  (\d)  ", codes_part, re.M)]
    assert listed == list(usage.EXITS[command]), text
    documented = re.findall(r"^\| (\d) \|", (REPO / "docs" / "cli.md").read_text(), re.M)
    assert {str(code) for code in listed} <= set(documented)
    (example,) = [line.strip() for line in example_part.splitlines() if line.strip()]
    argv = shlex.split(example)
    argv = argv[argv.index("node-agent") + 1 :] if "node-agent" in argv else argv[2:]
    args = build_parser().parse_args(argv)  # argparse's exit 2 would fail the test
    assert args.command == (command or argv[0])


def test_version_answers_without_loading_the_agent() -> None:
    script = (
        "import sys\n"
        "from node_agent.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = ('requests', 'urllib3', 'psutil', 'node_agent.agent')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"node-agent {__version__}\n[]\n"


def test_status_json_always_carries_its_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZ_BATCH_NODE_ROOT_DIR", str(tmp_path))
    monkeypatch.setenv("AZ_BATCH_NODE_SHARED_DIR", str(tmp_path / "shared"))
    assert main(["status", "--json"]) == EXIT_NOT_RUNNING
    nothing = json.loads(capsys.readouterr().out)
    assert nothing == {
        "schema": STATE_SCHEMA,
        "state_file": str(tmp_path / "shared" / ".node-agent" / "state.json"),
        "agent_alive": False,
        "worker_alive": False,
    }
    (tmp_path / "shared" / ".node-agent").mkdir(parents=True)
    (tmp_path / "shared" / ".node-agent" / "state.json").write_text("{}")
    assert main(["status", "--json"]) == EXIT_NOT_RUNNING
    problem = json.loads(capsys.readouterr().out)
    assert (
        problem["schema"] == STATE_SCHEMA
        and "does not hold a valid state" in (problem["state_problem"])
    )
    write_state(
        str(tmp_path / "shared" / ".node-agent" / "state.json"),
        AgentState(1, 1.5, "running", 1_700_000_000.25, "v3", "w", "/x", "/w", "/w/c"),
    )
    assert main(["status", "--json"]) == EXIT_NOT_RUNNING  # pid 1 is not that agent
    shown = json.loads(capsys.readouterr().out)
    assert shown["schema"] == STATE_SCHEMA
    assert shown["started_at"] == "2023-11-14T22:13:20.250000Z"
    assert shown["agent_create_time"] == "1970-01-01T00:00:01.500000Z"
    assert not any(isinstance(value, float) for value in shown.values())
