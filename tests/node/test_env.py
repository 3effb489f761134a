"""The Batch environment model: every fixture, its warnings, every broken fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.common.errors import InvalidInput
from node_agent.node.env import BatchEnv
from node_agent.node.env_model import HostPort, TaskKind, UserIdentity
from node_agent.node.envfile import load_env_file
from tests.helpers import BROKEN_ENVS, GOOD_ENVS, ODD_ENVS, fixture_env


def test_seed_parses_to_the_real_node() -> None:
    env = BatchEnv.from_environ(fixture_env("seed"))
    assert env.account.name == "flamenco"
    assert env.account.url == "https://flamenco.westeurope.batch.azure.com/"
    assert env.pool_id == "je-moeder-47"
    assert env.node.id == "tvm-383584635_1-20190115t092314z"
    assert env.node.is_dedicated and not env.node.is_spot
    assert env.node.root_dir == "/mnt/batch/tasks"
    assert env.node.shared_dir == "/mnt/batch/tasks/shared"
    assert env.node.startup_dir == "/mnt/batch/tasks/startup"
    assert env.node.mounts_dir is None
    assert env.task.kind is TaskKind.START
    assert env.task.dir == "/mnt/batch/tasks/startup"
    assert env.task.working_dir == "/mnt/batch/tasks/startup/wd"
    assert env.task.user == "_azbatchtask_start"
    assert env.task.user_identity is UserIdentity.TASK_NON_ADMIN
    assert env.certificates_dir == "/mnt/batch/tasks/startup/certs"
    assert env.extra == ()
    assert env.warnings == ()
    found = {(p.id, p.version, p.is_default, p.path) for p in env.packages}
    apps = "/mnt/batch/tasks/applications/"
    assert found == {
        (
            "blender",
            "2.80-daily-2019-10-14",
            True,
            apps + "blender2.80-daily-2019-10-142019-01-15-09-19",
        ),
        ("ffmpeg", "4.1", True, apps + "ffmpeg4.12019-01-15-09-16"),
        ("flamenco-worker", "2.2.1", True, apps + "flamenco-worker2.2.12019-01-15-08-52"),
    }


@pytest.mark.parametrize(
    "name", ["flamenco-worker", "flamenco_worker", "Flamenco-Worker", "FLAMENCO.WORKER"]
)
def test_package_lookup_ignores_case_and_separators(name: str) -> None:
    env = BatchEnv.from_environ(fixture_env("seed"))
    package = env.find_package(name)
    assert package is not None and package.version == "2.2.1"
    assert env.find_package("flamenco") is None


def test_newer_spot_node() -> None:
    env = BatchEnv.from_environ(fixture_env("newer_spot"))
    assert env.node.id.startswith("tvmps_") and len(env.node.id) == 72
    assert env.node.is_spot
    assert env.node.mounts_dir == "/mnt/resource/batch/tasks/fsmounts"
    assert env.task.user_identity is UserIdentity.POOL_NON_ADMIN
    assert not env.task.user_identity.is_admin
    reserved = env.reserved_disk_space
    assert (reserved.task_bytes, reserved.agent_bytes) == (10**9, 500 * 2**20)
    assert env.node.startup_working_dir == "/mnt/resource/batch/tasks/startup/wd"
    [token] = env.extra
    assert token.name == "AZ_BATCH_AUTHENTICATION_TOKEN" and token.is_secret
    worker = env.find_package("flamenco-worker")
    assert worker is not None and worker.version == "3.5.2"


def test_packages_by_explicit_version_only() -> None:
    env = BatchEnv.from_environ(fixture_env("explicit_versions"))
    assert {(p.id, p.version, p.is_default) for p in env.packages} == {
        ("blender", "4.2.3", False),
        ("ffmpeg", "7.0.2", False),
        ("flamenco-worker", "3.5.2", False),
    }
    assert env.node.root_dir == "/opt/batch/data"


def test_mixed_case_duplicates_are_one_package_each() -> None:
    env = BatchEnv.from_environ(fixture_env("mixed_case"))
    by_id = {p.id: p for p in env.packages}
    assert set(by_id) == {"Blender", "ffmpeg", "Flamenco-Worker", "MyBatchApplication"}
    assert by_id["Blender"].variables == (
        "AZ_BATCH_APP_PACKAGE_Blender",
        "AZ_BATCH_APP_PACKAGE_Blender_4_1",
        "AZ_BATCH_APP_PACKAGE_blender_4_1",
    )
    assert by_id["Blender"].is_default and by_id["Blender"].version == "4.1"
    assert not by_id["ffmpeg"].is_default
    assert env.find_package("mybatchapplication") is by_id["MyBatchApplication"]
    assert env.find_package("flamenco_worker") is by_id["Flamenco-Worker"]


def test_default_version_wins_when_several_are_deployed() -> None:
    variables = fixture_env("seed")
    apps = "/mnt/batch/tasks/applications/"
    variables["AZ_BATCH_APP_PACKAGE_blender_2_79"] = apps + "blender2.792019-01-15-09-10"
    env = BatchEnv.from_environ(variables)
    assert [p.version for p in env.packages if p.matches("blender")] == [
        "2.79",
        "2.80-daily-2019-10-14",
    ]
    found = env.find_package("blender")
    assert found is not None and found.version == "2.80-daily-2019-10-14"


def test_job_task() -> None:
    env = BatchEnv.from_environ(fixture_env("job_task"))
    assert env.task.kind is TaskKind.JOB
    assert (env.task.job_id, env.task.task_id) == ("render", "frame-0001")
    assert env.task.user_identity.is_admin
    assert {v.name for v in env.extra} == {"AZ_BATCH_JOB_PREP_DIR", "AZ_BATCH_JOB_PREP_WORKING_DIR"}


def test_multi_instance_task() -> None:
    env = BatchEnv.from_environ(fixture_env("multi_instance"))
    assert env.task.kind is TaskKind.MULTI_INSTANCE
    multi = env.task.multi_instance
    assert multi is not None
    assert multi.hosts == ("10.0.0.4", "10.0.0.5", "10.0.0.6")
    assert multi.master == HostPort("10.0.0.4", 6000)
    assert multi.is_master is True
    assert env.packages == ()


def test_ipv6_master_node() -> None:
    variables = fixture_env("multi_instance")
    variables["AZ_BATCH_MASTER_NODE"] = "[fd00::4]:6000"
    multi = BatchEnv.from_environ(variables).task.multi_instance
    assert multi is not None and multi.master == HostPort("fd00::4", 6000)


def test_unknown_batch_variables_are_kept() -> None:
    variables = fixture_env("seed")
    variables["AZ_BATCH_SOMETHING_NEW"] = "42"
    variables["AZ_BATCH_STORAGE_KEY"] = "hunter2"
    env = BatchEnv.from_environ(variables)
    assert [(v.name, v.value, v.is_secret) for v in env.extra] == [
        ("AZ_BATCH_SOMETHING_NEW", "42", False),
        ("AZ_BATCH_STORAGE_KEY", "hunter2", True),
    ]


def _expectations(path: Path) -> list[str]:
    prefix = "# expect: "
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def _matches(expected: list[str], messages: list[str]) -> None:
    assert len(messages) == len(expected), messages
    for fragment in expected:
        assert any(m.startswith(fragment) for m in messages), (fragment, messages)


def test_there_are_many_distinct_faulty_fixtures() -> None:
    assert len(BROKEN_ENVS) >= 5
    assert len(BROKEN_ENVS) + len(ODD_ENVS) >= 25


@pytest.mark.parametrize("path", GOOD_ENVS + ODD_ENVS, ids=lambda p: p.stem)
def test_fixture_parses_with_exactly_its_warnings(path: Path) -> None:
    """Each fixture's ``# expect:`` lines name its warnings (none for most real
    shapes; each ``odd/`` fixture has at least one)."""
    expected = _expectations(path)
    if path in ODD_ENVS:
        assert expected, f"{path.name} has no '# expect:' line"
    env = BatchEnv.from_environ(load_env_file(str(path)))
    _matches(expected, [str(w) for w in env.warnings])


@pytest.mark.parametrize("path", BROKEN_ENVS, ids=lambda p: p.stem)
def test_broken_fixture_gives_one_message_per_fault(path: Path) -> None:
    expected = _expectations(path)
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(InvalidInput) as caught:
        BatchEnv.from_environ(load_env_file(str(path)))
    _matches(expected, [str(p) for p in caught.value.problems])


def test_only_the_root_and_shared_dir_are_required() -> None:
    # Every modelled variable but those two gone: a model, with a warning for each
    # variable Batch sets on every node.
    keep = ("AZ_BATCH_NODE_ROOT_DIR", "AZ_BATCH_NODE_SHARED_DIR")
    env = BatchEnv.from_environ({k: v for k, v in fixture_env("seed").items() if k in keep})
    assert env.node.shared_dir == "/mnt/batch/tasks/shared"
    assert (env.pool_id, env.node.id, env.node.is_dedicated) == (None, None, None)
    assert env.node.is_spot  # unknown is handled as Spot
    assert (env.task.user, env.task.user_identity) == (None, None)
    assert {w.where for w in env.warnings} == {
        "AZ_BATCH_ACCOUNT_NAME",
        "AZ_BATCH_ACCOUNT_URL",
        "AZ_BATCH_POOL_ID",
        "AZ_BATCH_NODE_ID",
        "AZ_BATCH_NODE_IS_DEDICATED",
        "AZ_BATCH_NODE_STARTUP_DIR",
        "AZ_BATCH_TASK_DIR",
        "AZ_BATCH_TASK_WORKING_DIR",
        "AZ_BATCH_TASK_USER",
        "AZ_BATCH_TASK_USER_IDENTITY",
    }


@pytest.mark.parametrize(
    "pool_id, used",
    [
        ("render\nnode     fake-node, dedicated", "render_node_____fake-node__dedicated"),
        ("j\u0435-moeder-47", "j_-moeder-47"),  # a Cyrillic look-alike
        ("farm\u202e74-redeom", "farm_74-redeom"),  # right-to-left override
    ],
)
def test_a_bad_pool_id_is_a_warning_and_never_used_as_it_came(pool_id: str, used: str) -> None:
    variables = fixture_env("seed")
    variables["AZ_BATCH_POOL_ID"] = pool_id
    env = BatchEnv.from_environ(variables)
    assert env.pool_id == used
    [warning] = env.warnings
    assert warning.where == f"AZ_BATCH_POOL_ID={pool_id!a}"
    assert warning.where.isascii() and warning.where.isprintable()
    assert warning.message.endswith(f"shown and used as {used!r}")


def test_the_two_invented_variables_are_not_modelled() -> None:
    variables = fixture_env("seed")
    variables["AZ_BATCH_RESERVED_EPHEMERAL_DISK_SPACE_BYTES"] = "1"
    variables["AZ_BATCH_OS_RESERVED_EPHEMERAL_DISK_SPACE_BYTES"] = "2"
    env = BatchEnv.from_environ(variables)
    assert env.reserved_disk_space.task_bytes is None
    assert [v.name for v in env.extra] == [
        "AZ_BATCH_OS_RESERVED_EPHEMERAL_DISK_SPACE_BYTES",
        "AZ_BATCH_RESERVED_EPHEMERAL_DISK_SPACE_BYTES",
    ]


def test_package_choice_is_said_and_the_right_folder_used() -> None:
    env = BatchEnv.from_environ(fixture_env("two_folders"))
    choices = {i: env.choose_package(i) for i in ("blender", "ffmpeg", "flamenco-worker")}
    assert {i: (c.package.version, c.reason) for i, c in choices.items() if c} == {
        "blender": ("4.1.0", "the pool's default version"),
        "ffmpeg": ("10.0", "the highest version"),
        "flamenco-worker": ("3.5.2", "the highest version"),
    }
    worker = choices["flamenco-worker"]
    assert worker is not None and [p.version for p in worker.others] == ["3.4.1"]


def test_an_unparseable_folder_is_found_by_its_variables() -> None:
    env = BatchEnv.from_environ(fixture_env("unparseable_package"))
    worker = env.find_package("flamenco-worker")
    assert worker is not None and worker.path.endswith("/app-7f3c2a1e")
    assert (worker.id, worker.version, worker.is_default) == (None, None, None)
    assert worker.is_default_for("Flamenco-Worker")
    assert env.find_package("scenes") is not None
