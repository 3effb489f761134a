"""``node-agent fleet``'s input: every problem of the command line and the account
at once, before anything is done (exit 3), and the node that never loads fleet."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node_agent.cli import main
from node_agent.fleet.batch import BatchAccount, BatchService
from node_agent.fleet.scaler import ScaleSettings, run_round
from node_agent.fleet.scaling import Bounds, Memory
from node_agent.manager.api import ManagerApi
from node_agent.usage import install_fleet
from tests.fleet_farm import POOL, Farm, fleet
from tests.helpers import AZ_ENV

REPO = Path(__file__).resolve().parents[2]


def test_invalid_input_is_listed_at_once(
    farm: Farm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = fleet(capsys, "scale", "--min", "3", "--max", "2", "--per-node", "0")
    assert code == 3 and "--max: 2: must be at least --min" in err and "--per-node" in err
    code, _, err = fleet(capsys, "status", "--watch", "0")
    assert code == 3 and "--watch: 0.0: must be more than 0 seconds" in err
    monkeypatch.delenv("FLAMENCO_MANAGER_URL")
    code, _, err = fleet(capsys, "prune")
    assert code == 3 and "FLAMENCO_MANAGER_URL: not set" in err
    monkeypatch.delenv("AZURE_BATCH_ENDPOINT")
    monkeypatch.setenv("AZURE_BATCH_ACCESS_KEY", "not base64!")
    code, _, err = fleet(capsys, "status")
    assert code == 3 and "AZURE_BATCH_ENDPOINT: not set" in err
    assert "AZURE_BATCH_ACCESS_KEY: is not a base64 key" in err and "not base64!" not in err
    assert "Traceback" not in err


def test_unusable_numbers_and_files_are_refused_before_anything_is_done(
    farm: Farm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    farm.manager.add_task("frame 1", "misc")  # a round would grow the pool
    folder, fifo, huge = tmp_path / "a-folder", tmp_path / "fifo", tmp_path / "huge.json"
    folder.mkdir()
    os.mkfifo(fifo)
    with huge.open("wb") as out:
        out.truncate(64 << 20)
    scale = ("scale", "--min", "0", "--max", "2", "--apply")
    for memory, why in (
        (folder, ": cannot read: Is a directory"),
        (fifo, " is not a regular file"),
        (Path("/dev/zero"), " is not a regular file"),
        (huge, " is larger than 1024 KiB"),
    ):
        code, _, err = fleet(capsys, *scale, "--every", "nan", "--memory", str(memory))
        assert code == 3, err
        assert f"--memory: {memory}{why}" in err and "--every: nan: must be more than 0" in err
        assert "Traceback" not in err
    code, _, err = fleet(capsys, *scale, "--idle-minutes", "inf", "--every", "1e300")
    assert code == 3 and "--idle-minutes: inf: must be 0 or more" in err
    assert "--every: 1e+300: must be more than 0 seconds and at most 86400 (a day)" in err
    assert not farm.batch.received("POST", "/pools")  # nothing was done
    assert folder.is_dir() and stat.S_ISFIFO(fifo.stat().st_mode)
    for watch in ("inf", "nan", "-1"):
        code, _, err = fleet(capsys, "status", "--watch", watch)
        assert code == 3 and f"--watch: {float(watch)}: must be more than 0" in err
    assert main(["fleet", "status", "--pool", ""]) == 3
    err = capsys.readouterr().err
    assert "--pool: '': expected a Batch pool id" in err and "Traceback" not in err


def test_a_memory_that_cannot_be_kept_fails_the_round_without_a_traceback(
    farm: Farm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    farm.manager.add_task("frame 1", "misc")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    service = BatchService(BatchAccount.from_environ(os.environ, None).client(), POOL)
    settings = ScaleSettings(Bounds(0, 2, 1, 10), ".x", a_file / "memory.json", True)
    result = run_round(service, ManagerApi(farm.manager.url), settings, Memory())
    assert not result.ok
    assert farm.batch.received("POST", "/pools/render/resize")  # the round's action was done
    assert f"cannot keep what this round did in {a_file / 'memory.json'}" in caplog.text


def test_the_node_never_loads_fleet_and_says_which_extra_is_missing() -> None:
    node_path = (
        "import sys; from node_agent.cli import main; "
        f"main(['env', '--env-file', {str(AZ_ENV / 'seed.env')!r}]); "
        "loaded = [m for m in sys.modules if m.startswith(('azure', 'node_agent.fleet'))]; "
        "print('loaded:', loaded, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", node_path], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0 and "loaded: []" in result.stderr
    without = (
        "import sys; sys.modules['azure.batch'] = None; from node_agent.cli import main; "
        "sys.exit(main(['fleet', 'status', '--pool', 'p']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", without], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 3, result.stderr
    assert install_fleet() in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["status", "prune", "heal", "scale", "roll"])
def test_each_commands_help_gives_defaults_environment_exit_codes_and_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["fleet", command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "environment:" in text and "AZURE_BATCH_ACCESS_KEY" in text
    assert "FLAMENCO_MANAGER_URL" in text and "exit codes:" in text
    assert f"example:\n  node-agent fleet {command} --pool render" in text
    assert "(30; Batch calls are tried 2 more times)" in flat  # --timeout's default
    if command == "status":
        assert "6  some node needs attention" in text
    if command == "scale":
        assert "never fewer Spot nodes than N (dedicated nodes are not counted)" in flat
        assert "XDG_STATE_HOME" in text and "(10)" in text


def test_the_scale_memory_is_kept_in_iso_8601_and_older_files_still_read(tmp_path: Path) -> None:
    from node_agent.fleet.scaler import load_memory, save_memory

    path = tmp_path / "memory.json"
    memory = Memory({"node-1": 1_800_000_000.25}, frozenset({"node-2"}), 1_800_000_100.5)
    save_memory(path, memory)
    document = json.loads(path.read_text())
    assert document == {
        "schema": 1,
        "unused_since": {"node-1": "2027-01-15T08:00:00.250Z"},
        "draining": ["node-2"],
        "surplus_since": "2027-01-15T08:01:40.500Z",
    }
    assert load_memory(path) == memory
    path.write_text(json.dumps({"unused_since": {"node-1": 1_800_000_000.25}, "draining": []}))
    assert load_memory(path) == Memory({"node-1": 1_800_000_000.25})  # a file of an older fleet
