"""GPU nodes: Blender's entry on PATH renders Cycles on the configured device
(``cycles_device``) whatever the .blend says; doctor reports the driver, what
Cycles sees (CUDA, OptiX) and the tags a worker gets; ``gpu_tags`` join the worker's
tags only where the driver lists a GPU. A stand-in ``nvidia-smi`` and a stand-in
Blender answer as the real ones do."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node_agent import doctor
from node_agent.doctor import Status
from node_agent.node.gpus import Gpu, GpuReport, effective_worker_tags, parse_query, with_gpu_tags
from tests.nodes import TestNode, make_node, write_executable

SMI_T4 = "#!/bin/sh\necho 'Tesla T4, 550.144.06, 15360'\n"
# Blender as the doctor asks it: the Cycles devices of each type; and every
# argument it was given, for the launcher's test.
BLENDER = """#!/bin/sh
for arg do echo "[$arg]"; done > "$(dirname "$0")/args.txt"
case "$*" in *--python-expr*)
    echo "node-agent-devices CUDA Tesla T4"
    echo "node-agent-devices OPTIX Tesla T4";;
esac
"""


def _gpu_node(tmp_path: Path, smi: str = SMI_T4, **settings: str) -> TestNode:
    node = make_node(tmp_path / "root", "newer_spot")
    write_executable(node.package_dir("blender") / "blender", BLENDER)
    tools = tmp_path / "driver"
    tools.mkdir()
    if smi:
        write_executable(tools / "nvidia-smi", smi)
    node.environ["PATH"] += f":{tools}"
    node.environ.update(settings)
    return node


def _bootstrap(node: TestNode, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "node_agent",
            "bootstrap",
            "--env-file",
            str(node.env_file(tmp_path / "n.env")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": node.environ["PATH"]},
    )
    assert result.returncode == 0, result.stderr
    assert "note: blender: renders Cycles on OPTIX (cycles_device)" in result.stdout


def _blender_args(node: TestNode, *args: str) -> list[str]:
    found = shutil.which("blender", path=node.environ["PATH"])
    assert found == str(node.shared / "blender")
    subprocess.run([found, *args], check=True, timeout=30, env={"PATH": node.environ["PATH"]})
    text = (node.package_dir("blender") / "args.txt").read_text()
    return [line[1:-1] for line in text.splitlines()]


def test_blender_renders_cycles_on_the_configured_device(tmp_path: Path) -> None:
    node = _gpu_node(tmp_path, NODE_AGENT_CYCLES_DEVICE="optix")
    _bootstrap(node, tmp_path)
    assert _blender_args(node, "-b", "shot 1.blend", "-a") == [
        "-b",
        "shot 1.blend",
        "-a",
        "--",
        "--cycles-device",
        "OPTIX",
    ]
    # A caller's own "--" (a script's arguments): Cycles' option goes after it.
    assert _blender_args(node, "-b", "s.blend", "--", "--frames", "1") == [
        "-b",
        "s.blend",
        "--",
        "--frames",
        "1",
        "--cycles-device",
        "OPTIX",
    ]


def test_doctor_reports_the_driver_cycles_devices_and_tags(tmp_path: Path) -> None:
    node = _gpu_node(
        tmp_path,
        NODE_AGENT_CYCLES_DEVICE="OPTIX",
        NODE_AGENT_GPU_TAGS="Cycles GPU",
        FLAMENCO_WORKER_TAGS="EEVEE",
    )
    _bootstrap(node, tmp_path)
    rows = {row.check: row for row in doctor.run_checks(node.environ)}
    assert rows["gpus"].status is Status.OK
    assert rows["gpus"].found == "NVIDIA 550.144.06: Tesla T4 (15360 MiB)"
    assert rows["gpu blender"].status is Status.OK
    assert rows["gpu blender"].found == "CUDA: Tesla T4; OPTIX: Tesla T4"
    assert rows["gpu tags"].status is Status.OK
    assert rows["gpu tags"].found == ("adds Cycles GPU: a new registration gets EEVEE, Cycles GPU")


def test_a_gpu_pool_node_without_a_driver_fails_and_gets_no_gpu_tags(tmp_path: Path) -> None:
    node = _gpu_node(tmp_path, smi="", NODE_AGENT_GPU_TAGS="Cycles GPU")
    rows = {row.check: row for row in doctor.run_checks(node.environ)}
    assert rows["gpus"].status is Status.FAILED
    assert "no nvidia-smi" in rows["gpus"].found and "gpu_tags expects one" in rows["gpus"].found
    assert rows["gpus"].fix is not None and "gpu: true" in rows["gpus"].fix
    assert rows["gpu tags"].status is Status.WARNING
    assert rows["gpu tags"].found == "adds none (no GPU): a new registration gets no tags"
    assert "gpu blender" not in rows


def test_gpu_tags_join_only_where_the_driver_lists_a_gpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t4 = GpuReport((Gpu("Tesla T4", 15360),), "550.144.06", None)
    none = GpuReport((), None, "no nvidia-smi: no NVIDIA driver on this node")
    assert with_gpu_tags(("EEVEE",), ("Cycles GPU", "EEVEE"), t4) == ("EEVEE", "Cycles GPU")
    assert with_gpu_tags(("EEVEE",), ("Cycles GPU",), none) == ("EEVEE",)
    assert parse_query("Tesla T4, 550.144.06, 15360\nNVIDIA A10, 550.144.06, [N/A]\n") == (
        (Gpu("Tesla T4", 15360), Gpu("NVIDIA A10", None)),
        "550.144.06",
    )

    driver = tmp_path / "driver"
    driver.mkdir()
    write_executable(driver / "nvidia-smi", SMI_T4)
    with caplog.at_level(logging.INFO):
        assert effective_worker_tags(("EEVEE",), ("Cycles GPU",), str(driver)) == (
            "EEVEE",
            "Cycles GPU",
        )
        assert effective_worker_tags(("EEVEE",), (), str(driver)) == ("EEVEE",)
        assert effective_worker_tags(("EEVEE",), ("Cycles GPU",), str(tmp_path)) == ("EEVEE",)
    assert "gpu_tags: Tesla T4 (driver 550.144.06): adding Cycles GPU" in caplog.text
    assert "gpu_tags: not added, no usable GPU: no nvidia-smi" in caplog.text
