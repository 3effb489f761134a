"""The rendered worker configs read back the way the workers read them."""

from __future__ import annotations

import configparser
import logging
import logging.config
from pathlib import Path

import pytest
import yaml

from node_agent.bootstrap.workerconfig import render_v2, render_v3, v2_credentials


def test_v3_config_has_exactly_the_documented_keys() -> None:
    document = yaml.safe_load(render_v3("http://m:8080/", None, 75, "pool-abc"))
    assert document == {
        "manager_url": "http://m:8080/",
        "task_types": ["blender", "ffmpeg", "file-management", "misc"],
        "restart_exit_code": 75,
        "worker_name": "pool-abc",
    }


def test_v3_config_has_oom_score_adjust_when_set() -> None:
    document = yaml.safe_load(render_v3("http://m/", None, 75, "pool-abc", 500))
    assert document["oom_score_adjust"] == 500


def test_v3_config_quotes_awkward_names() -> None:
    document = yaml.safe_load(render_v3("http://m/", ("blender",), 9, "yes: no # really"))
    assert document["worker_name"] == "yes: no # really"


def test_v2_config_reads_back_with_configparser_and_logging(tmp_path: Path) -> None:
    text = render_v2(
        "http://m:8083/",
        None,
        "/node/shared/.node-agent/worker",
        "reg%secret",
        {"worker_id": "5c1f", "worker_secret": "s3cr%t"},
    ).decode()
    path = tmp_path / "flamenco-worker.cfg"
    path.write_text(text)
    parser = configparser.ConfigParser()  # the v2 worker's own, with interpolation
    parser.read(path)
    section = parser["flamenco-worker"]
    assert dict(section) == {
        "manager_url": "http://m:8083/",
        "task_types": "sleep blender-render file-management exr-merge video-encoding",
        "task_update_queue_db": "/node/shared/.node-agent/worker/flamenco-worker.db",
        "subprocess_pid_file": "/node/shared/.node-agent/worker/flamenco-worker-subprocess.pid",
        "worker_registration_secret": "reg%secret",
        "worker_id": "5c1f",
        "worker_secret": "s3cr%t",
    }
    logging.config.fileConfig(path, disable_existing_loggers=False)
    try:
        logger = logging.getLogger("flamenco_worker")
        assert logger.handlers and isinstance(logger.handlers[0], logging.StreamHandler)
    finally:
        logging.getLogger("flamenco_worker").handlers.clear()
        logging.getLogger().handlers.clear()


def test_v2_credentials_round_trip() -> None:
    text = render_v2(
        "http://m/", ("sleep",), "/w", None, {"worker_id": "id", "worker_secret": "a%b"}
    ).decode()
    assert v2_credentials(text) == {"worker_id": "id", "worker_secret": "a%b"}
    assert v2_credentials(render_v2("http://m/", None, "/w", None, {}).decode()) == {}
    assert v2_credentials("") == {}


def test_unparseable_v2_config_is_refused() -> None:
    with pytest.raises(ValueError, match="no section headers"):
        v2_credentials("worker_id = 1\n")
