"""Settings: four sources, precedence, every bad value at once, flavour choice."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from node_agent.common.errors import InvalidInput
from node_agent.config.settings import load_settings, resolve_settings
from node_agent.node.flavour import Flavour, resolve_flavour

URL = {"FLAMENCO_MANAGER_URL": "http://manager:8080/"}


def test_defaults() -> None:
    settings = load_settings(URL, {}, None)
    assert settings.manager_url == "http://manager:8080/"
    assert settings.task_types is None
    assert settings.worker_name is None
    assert settings.flavour is Flavour.AUTO
    assert settings.restart_exit_code == 75
    assert settings.registration_secret is None
    assert settings.tools == ("blender", "ffmpeg", "ffprobe")
    assert not settings.tools_explicit()
    assert settings.source("manager_url") == "environment FLAMENCO_MANAGER_URL"


def test_a_bad_setting_resolves_to_its_default_for_planning() -> None:
    # A plan made with these lists its own problems beside the settings' (cli).
    settings, problems = resolve_settings({"NODE_AGENT_TOOLS": ","}, {"stop_grace": "-1"}, None)
    assert [p.where.split("=")[0] for p in problems] == ["tools", "stop_grace", "manager_url"]
    assert settings.tools == ("blender", "ffmpeg", "ffprobe") and not settings.tools_explicit()
    assert settings.stop_grace == load_settings(URL, {}, None).stop_grace
    assert settings.source("stop_grace") == "default" and settings.manager_url == ""


def test_precedence_command_line_environment_file_default(tmp_path: Path) -> None:
    config = tmp_path / "node-agent.yaml"
    config.write_text(
        "manager_url: http://from-file/\n"
        "task_types: [blender, misc]\n"
        "worker_name: from-file\n"
        "restart_exit_code: 42\n"
    )
    environ = {
        "NODE_AGENT_CONFIG": str(config),
        "FLAMENCO_WORKER_NAME": "from-env",
        "FLAMENCO_MANAGER_URL": "http://from-env/",
    }
    settings = load_settings(environ, {"manager_url": "https://from-cli/"}, None)
    assert settings.manager_url == "https://from-cli/"
    assert settings.worker_name == "from-env"
    assert settings.task_types == ("blender", "misc")
    assert settings.restart_exit_code == 42
    assert settings.tools == ("blender", "ffmpeg", "ffprobe")
    assert settings.source("manager_url") == "command line --manager-url"
    assert settings.source("worker_name") == "environment FLAMENCO_WORKER_NAME"
    assert settings.source("task_types") == str(config)
    assert settings.source("tools") == "default"


def test_package_config_used_only_without_node_agent_config(tmp_path: Path) -> None:
    packaged = tmp_path / "node-agent.yaml"
    packaged.write_text("tools: blender\nmanager_url: http://packaged/\n")
    settings = load_settings({}, {}, packaged)
    assert settings.tools == ("blender",) and settings.tools_explicit()
    assert settings.manager_url == "http://packaged/"
    other = tmp_path / "other.yaml"
    other.write_text("manager_url: http://other/\n")
    assert load_settings({"NODE_AGENT_CONFIG": str(other)}, {}, packaged).tools == (
        "blender",
        "ffmpeg",
        "ffprobe",
    )
    assert load_settings(URL, {}, tmp_path / "absent.yaml").tools_explicit() is False


def test_every_bad_value_reported_at_once(tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("colour: blue\nworker_name: ok\ntask_typo: [x]\n")
    environ = {
        "NODE_AGENT_CONFIG": str(config),
        "FLAMENCO_MANAGER_URL": "manager:8080",
        "FLAMENCO_TASK_TYPES": "  ",
        "FLAMENCO_WORKER_FLAVOUR": "v4",
        "FLAMENCO_RESTART_EXIT_CODE": "forty-two",
        "FLAMENCO_REGISTRATION_SECRET": "",
    }
    with pytest.raises(InvalidInput) as caught:
        load_settings(environ, {"tools": ""}, None)
    messages = [str(p) for p in caught.value.problems]
    expected = [
        f"{config}: colour: unknown setting",
        f"{config}: task_typo: unknown setting",
        "manager_url='manager:8080' (from environment FLAMENCO_MANAGER_URL): expected an "
        "http:// or https:// URL with a host",
        "task_types='  ' (from environment FLAMENCO_TASK_TYPES): expected at least one name",
        "flavour='v4' (from environment FLAMENCO_WORKER_FLAVOUR): expected auto, v2 or v3",
        "restart_exit_code='forty-two' (from environment FLAMENCO_RESTART_EXIT_CODE): "
        "expected a whole number",
        "registration_secret=<redacted> (from environment FLAMENCO_REGISTRATION_SECRET)",
        "tools='' (from command line --tools): expected at least one name",
    ]
    for fragment in expected:
        assert any(m.startswith(fragment) for m in messages), (fragment, messages)
    assert len(messages) == len(expected)


def test_secret_values_never_in_messages() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings(
            {**URL, "FLAMENCO_REGISTRATION_SECRET": "", "FLAMENCO_WORKER_FLAVOUR": "x"}, {}, None
        )
    assert "<redacted>" in caught.value.render()


def test_a_bad_value_is_shown_escaped() -> None:
    # A Cyrillic "o" that reads as a zero ("1o" for "10") shows as an escape.
    with pytest.raises(InvalidInput) as caught:
        load_settings({**URL, "NODE_AGENT_STOP_GRACE": "1\u043e"}, {}, None)
    [problem] = caught.value.problems
    assert problem.where == "stop_grace='1\\u043e' (from environment NODE_AGENT_STOP_GRACE)"


@pytest.mark.parametrize(
    "url, why",
    [
        ("ftp://manager/", ""),
        ("http://", ""),
        ("http:///path", ""),
        ("manager", ""),
        ("http://127.0.0.1:99999/", " and, if any, a port from 1 to 65535"),
        ("http://127.0.0.1:abc/", " and, if any, a port from 1 to 65535"),
        ("http://127.0.0.1:0/", " and, if any, a port from 1 to 65535"),
        ("http://[::1/", " and, if any, a port from 1 to 65535"),
        ("http://my manager:8080/", ", without spaces or control characters"),
        ("http://manager\x00:8080/", ", without spaces or control characters"),
    ],
)
def test_bad_urls(url: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings({"FLAMENCO_MANAGER_URL": url}, {}, None)
    assert (
        caught.value.problems[0].message == "expected an http:// or https:// URL with a host" + why
    )


@pytest.mark.parametrize("url", ["http://m:8080/", "https://[::1]:443/", "http://u:p@m/"])
def test_good_urls(url: str) -> None:
    assert load_settings({"FLAMENCO_MANAGER_URL": f" {url} "}, {}, None).manager_url == url


def test_manager_url_is_required() -> None:
    with pytest.raises(InvalidInput, match="FLAMENCO_MANAGER_URL in the pool's"):
        load_settings({}, {}, None)


@pytest.mark.parametrize("code", ["0", "256", "-1"])
def test_restart_exit_code_range(code: str) -> None:
    with pytest.raises(InvalidInput, match="1 to 255"):
        load_settings({**URL, "FLAMENCO_RESTART_EXIT_CODE": code}, {}, None)


@pytest.mark.parametrize(
    "text, problem",
    [("[unclosed", "is not valid YAML"), ("- a list\n", "expected a mapping")],
)
def test_bad_yaml_file(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(InvalidInput, match=problem):
        load_settings({**URL, "NODE_AGENT_CONFIG": str(config)}, {}, None)


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read: No such file"):
        load_settings({**URL, "NODE_AGENT_CONFIG": str(tmp_path / "no.yaml")}, {}, None)


@pytest.mark.parametrize(
    "version, flavour, guessed",
    [
        ("2.2.1", Flavour.V2, False),
        ("3.5.2", Flavour.V3, False),
        ("10.0", Flavour.V3, False),
        ("v3.6", Flavour.V3, False),
        ("daily", Flavour.V3, True),
        (None, Flavour.V3, True),
        ("1.0", Flavour.V3, True),
    ],
)
def test_auto_flavour(version: Optional[str], flavour: Flavour, guessed: bool) -> None:
    choice = resolve_flavour(Flavour.AUTO, version)
    assert (choice.flavour, choice.guessed) == (flavour, guessed)


def test_explicit_flavour_wins() -> None:
    assert resolve_flavour(Flavour.V2, "3.5").flavour is Flavour.V2


def test_worker_tags_oom_score_adjust_and_worker_args(tmp_path: Path) -> None:
    defaults = load_settings(URL, {}, None)
    assert defaults.worker_tags == () and defaults.worker_args == ()
    assert defaults.oom_score_adjust == 500
    environ = {
        **URL,
        "FLAMENCO_WORKER_TAGS": "Cycles GPU, EEVEE,,Cycles GPU",
        "FLAMENCO_OOM_SCORE_ADJUST": "none",
        "FLAMENCO_WORKER_ARGS": "-debug '-odd=a b'",
    }
    settings = load_settings(environ, {}, None)
    assert settings.worker_tags == ("Cycles GPU", "EEVEE")
    assert settings.oom_score_adjust is None
    assert settings.worker_args == ("-debug", "-odd=a b")
    config = tmp_path / "node-agent.yaml"
    config.write_text(
        "worker_tags: [Cycles GPU, CPU]\noom_score_adjust: 1000\nworker_args: [-debug, -quiet]\n"
    )
    from_file = load_settings({**URL, "NODE_AGENT_CONFIG": str(config)}, {}, None)
    assert from_file.worker_tags == ("Cycles GPU", "CPU")
    assert from_file.oom_score_adjust == 1000
    assert from_file.worker_args == ("-debug", "-quiet")


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("FLAMENCO_OOM_SCORE_ADJUST", "-17", "a negative value needs a privilege"),
        ("FLAMENCO_OOM_SCORE_ADJUST", "lots", "expected a whole number from 0 to 1000"),
        ("FLAMENCO_WORKER_ARGS", "-restart-exit-code=3", "set restart_exit_code instead"),
        ("FLAMENCO_WORKER_ARGS", "--manager http://x/", "set manager_url instead"),
        ("FLAMENCO_WORKER_ARGS", "-version", "it makes the worker exit at once"),
        ("FLAMENCO_WORKER_ARGS", "-debug 'unclosed", "as a shell would split them"),
        ("FLAMENCO_WORKER_ARGS", "-debug\x00", "without NUL characters"),
        ("FLAMENCO_WORKER_NAME", "render\r[flamenco-worker]", "without control characters"),
        ("FLAMENCO_WORKER_NAME", "render\u2028x", "without control characters"),
        ("FLAMENCO_TASK_TYPES", "blender ffmpeg\x00", "names without control characters"),
        ("NODE_AGENT_TOOLS", "blender\x1b[2J", "names without control characters"),
    ],
)
def test_bad_worker_settings(variable: str, value: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings({**URL, variable: value}, {}, None)
    assert message in str(caught.value.problems[0])


@pytest.mark.parametrize("line_break", ["\n", "\r", "\r\n", "\x0b", "\x85", "\u2029", "\x00"])
def test_a_secret_is_one_line_without_control_characters(line_break: str) -> None:
    # In the v2 worker's config file the rest would be a line of its own: a key.
    secret = f"TopSecretValue1{line_break}worker_id = injected"
    with pytest.raises(InvalidInput) as caught:
        load_settings({**URL, "FLAMENCO_REGISTRATION_SECRET": secret}, {}, None)
    [problem] = caught.value.problems
    assert str(problem) == (
        "registration_secret=<redacted> (from environment FLAMENCO_REGISTRATION_SECRET): "
        "expected a non-empty single-line secret without control characters"
    )


def test_a_yaml_list_or_mapping_where_a_single_value_is_expected(tmp_path: Path) -> None:
    config = tmp_path / "node-agent.yaml"
    config.write_text(
        "registration_secret: [TopSecretValue1, x]\n"
        "worker_name: {name: render}\n"
        "task_types: [[blender], ffmpeg]\n"
        "tools: {blender: yes}\n"
        "worker_tags: [GPU, CPU]\n"
    )
    with pytest.raises(InvalidInput) as caught:
        load_settings({**URL, "NODE_AGENT_CONFIG": str(config)}, {}, None)
    assert [str(p) for p in caught.value.problems] == [
        f"{config}: registration_secret: expected a single value, not a list",
        f"{config}: worker_name: expected a single value, not a mapping",
        f"{config}: task_types: expected a list of single values, not of lists or mappings",
        f"{config}: tools: expected a list or a single value, not a mapping",
    ]
    assert "TopSecretValue1" not in caught.value.render()
