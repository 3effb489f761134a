"""The settings page and the command line's help tell the same defaults and
variables as the settings' specs, the one place they are written."""

from __future__ import annotations

import re
from pathlib import Path

from node_agent.config.specs import SPECS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        key = re.fullmatch(r"`(\w+)`", cells[0]) if line.startswith("| `") else None
        if key:
            rows[key.group(1)] = [re.sub(r"[`*]", "", cell) for cell in cells[1:]]
    return rows


def test_the_settings_table_has_every_setting_as_its_spec_has_it() -> None:
    rows = _rows()
    assert list(rows) == [spec.key for spec in SPECS]  # all of them, in the specs' order
    for spec in SPECS:
        env, option, default, _meaning = rows[spec.key]
        assert env == spec.env, spec.key
        assert option.split("=")[0] == spec.flag, spec.key
        assert spec.default_text() in default, (spec.key, default)


def test_defaults_are_shown_as_the_operator_writes_them() -> None:
    shown = {spec.key: spec.default_text() for spec in SPECS}
    assert shown["manager_url"] == "required"
    assert shown["stop_grace"] == "30"
    assert shown["tools"] == "blender ffmpeg ffprobe"
    assert shown["forget_worker"] == "auto"
    assert shown["watch_events"] == "true"
    assert shown["log_max_size"] == "64M"
    assert shown["worker_tags"] == "none"
