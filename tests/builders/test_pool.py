"""The pool generator (packaging/make-pool): operator inputs in, pool JSON out,
checked field by field against the azure-batch 15.x models (REST API 2025-06-01)."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from node_agent.sim.node import SimulatedNode, pool_mounts, start_task_command
from tests.helpers import fixture_env

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "packaging"))

import poolcheck  # noqa: E402
from poolgen import load_input, pool_document  # noqa: E402

MAKE_POOL = REPO / "packaging" / "make-pool"
EXAMPLE = REPO / "packaging" / "pool.example.yaml"
POOL = REPO / "packaging" / "pool.json"
SUBSCRIPTION = "0b8f4c5e-1d2a-4e3b-9c7d-6a5f4e3d2c1b"
KEY = "c2VjcmV0LXN0b3JhZ2Uta2V5LW5ldmVyLXByaW50LW1l=="  # a stand-in account key
SUBNET = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/net/providers/Microsoft.Network/"
    "virtualNetworks/farm/subnets/render"
)
BASE: dict[str, Any] = {
    "subscription": SUBSCRIPTION,
    "resource_group": "render",
    "batch_account": "renderfarm",
    "pool_id": "spot-render",
    "vm_size": "standard_d16s_v5",
    "dedicated_nodes": 1,
    "spot_nodes": 10,
    "subnet": SUBNET,
    "manager_url": "http://10.0.0.4:8080/",
}
INPUTS = {
    "smb": {
        **BASE,
        "storage": {"kind": "azure-files", "account": "renderstore", "share": "projects"},
    },
    "nfs": {
        **BASE,
        "storage": {"kind": "nfs", "source": "10.0.0.5:/export/flamenco", "mount": "projects"},
        "packages": {"blender": "4.2.3", "ffmpeg": None, "flamenco-worker": "3.7"},
    },
    "no storage": {**BASE, "storage": {"kind": "none"}},
    "spot only": {
        **BASE,
        "dedicated_nodes": 0,
        "spot_nodes": 40,
        "subnet": "farm/render",
        "network_resource_group": "net",
    },
}


def _app_id(name: str) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/render/providers/"
        f"Microsoft.Batch/batchAccounts/renderfarm/applications/{name}"
    )


def _generate(document: dict[str, Any]) -> dict[str, Any]:
    pool, problems = load_input(document)
    assert pool is not None, problems
    return pool_document(pool, KEY if pool.needs_key else None)


@pytest.mark.parametrize("case", sorted(INPUTS))
def test_generated_pools_match_the_batch_api(case: str) -> None:
    body = _generate(copy.deepcopy(INPUTS[case]))
    assert poolcheck.check_pool(body) == []
    assert poolcheck.sdk_version().startswith("15.")
    assert body["networkConfiguration"] == {"subnetId": SUBNET}
    assert body["virtualMachineConfiguration"] == {
        "imageReference": {
            "publisher": "Canonical",
            "offer": "ubuntu-24_04-lts",
            "sku": "server",
            "version": "latest",
        },
        "nodeAgentSKUId": "batch.node.ubuntu 24.04",
    }
    references = {
        r["applicationId"]: r.get("version") for r in body["applicationPackageReferences"]
    }
    expected_versions = INPUTS[case].get("packages") or dict.fromkeys(
        ("blender", "ffmpeg", "flamenco-worker")
    )
    assert references == {_app_id(name): v for name, v in expected_versions.items()}
    start = body["startTask"]
    assert start["waitForSuccess"] is False
    assert start["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    assert start["commandLine"].startswith("/bin/sh -c 'exec python3 -I ")
    settings = {s["name"]: s["value"] for s in start["environmentSettings"]}
    assert settings["FLAMENCO_MANAGER_URL"] == "http://10.0.0.4:8080/"
    mounts = body.get("mountConfiguration", [])
    if case == "smb":
        share = mounts[0]["azureFileShareConfiguration"]
        assert share == {
            "accountName": "renderstore",
            "azureFileUrl": "https://renderstore.file.core.windows.net/projects",
            "accountKey": KEY,
            "relativeMountPath": "flamenco",
            "mountOptions": "-o vers=3.0,dir_mode=0777,file_mode=0777",
        }
        assert settings["NODE_AGENT_STORAGE_MOUNTS"] == "flamenco"
    elif case == "nfs":
        assert mounts == [
            {
                "nfsMountConfiguration": {
                    "source": "10.0.0.5:/export/flamenco",
                    "relativeMountPath": "projects",
                }
            }
        ]
        assert settings["NODE_AGENT_STORAGE_MOUNTS"] == "projects"
    else:
        assert mounts == [] and "NODE_AGENT_STORAGE_MOUNTS" not in settings
    if case == "spot only":
        assert body["targetDedicatedNodes"] == 0 and body["targetLowPriorityNodes"] == 40


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda b: b["startTask"].update(waitForSucess=False),
            "startTask.waitForSucess: not a field",
        ),
        # In REST API 2024-02-01 (azure-batch 14.2.0), gone since classic
        # node communication was retired.
        (lambda b: b.update(targetNodeCommunicationMode="classic"), "targetNodeCommunicationMode"),
        (lambda b: b.update(resourceTags={"team": "fx"}), "pool.resourceTags: not a field"),
        (
            lambda b: b["startTask"]["userIdentity"]["autoUser"].update(elevationLevel="nonadm"),
            "'nonadm' is not one of nonadmin, admin",
        ),
        (lambda b: b.update(targetDedicatedNodes="1"), "pool.targetDedicatedNodes: '1' is not"),
        (lambda b: b["startTask"].update(waitForSuccess="false"), "'false' is not a JSON bool"),
        (lambda b: b.pop("vmSize"), "pool.vmSize: required"),
        (
            lambda b: b["mountConfiguration"][0]["nfsMountConfiguration"].pop("source"),
            "nfsMountConfiguration.source: required",
        ),
        (
            lambda b: b["virtualMachineConfiguration"]["imageReference"].update(exactVersion="1"),
            "exactVersion: read-only",
        ),
    ],
    ids=[
        "misspelt",
        "retired",
        "retired-tags",
        "enum",
        "int",
        "bool",
        "required",
        "required-nested",
        "read-only",
    ],
)
def test_the_check_catches_what_the_sdk_lets_through(change: Any, message: str) -> None:
    body = _generate(copy.deepcopy(INPUTS["nfs"]))
    change(body)
    assert any(message in problem for problem in poolcheck.check_pool(body)), message


def test_the_committed_example_is_what_the_generator_writes() -> None:
    """packaging/pool.json is generated, never hand-edited: regenerate it with
    packaging/make-pool --input packaging/pool.example.yaml --out packaging/pool.json."""
    generated = _generate(yaml.safe_load(EXAMPLE.read_text()))
    assert json.loads(POOL.read_text()) == generated
    assert POOL.read_text() == json.dumps(generated, indent=2) + "\n"
    assert poolcheck.check_pool(generated) == []
    assert pool_mounts(POOL) == ["flamenco"]
    assert start_task_command(POOL)[1]["NODE_AGENT_STORAGE_MOUNTS"] == "flamenco"


def _make_pool(
    tmp_path: Path, document: Any, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "input.yaml"
    source.write_text(yaml.safe_dump(document))
    environ = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_KEY"}
    return subprocess.run(
        [sys.executable, str(MAKE_POOL), "--input", str(source), *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_the_storage_key_goes_only_into_the_pool_file(tmp_path: Path) -> None:
    out = tmp_path / "pool.json"
    result = _make_pool(tmp_path, INPUTS["smb"], "--out", str(out), AZURE_STORAGE_KEY=KEY)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    body = json.loads(out.read_text())
    assert body["mountConfiguration"][0]["azureFileShareConfiguration"]["accountKey"] == KEY
    assert KEY not in result.stdout + result.stderr
    assert f"WARNING: {out} holds the storage account key (from $AZURE_STORAGE_KEY" in result.stdout
    assert "checked against azure-batch 15." in result.stdout
    assert f"az batch pool create --json-file {out}" in result.stdout
    # Nothing else was written beside it (no temporary file, no copy).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.yaml", "pool.json"]


def test_without_a_secret_the_file_is_not_private(tmp_path: Path) -> None:
    result = _make_pool(tmp_path, INPUTS["nfs"], "--short-application-ids")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "spot-render.json"  # default: <pool id>.json
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 and "WARNING" not in result.stdout
    ids = [r["applicationId"] for r in json.loads(out.read_text())["applicationPackageReferences"]]
    assert ids == ["blender", "ffmpeg", "flamenco-worker"]


def test_a_password_in_the_manager_url_is_never_printed(tmp_path: Path) -> None:
    password = "Hunter2Secret"
    document = {**INPUTS["nfs"], "manager_url": f"http://flamenco:{password}@10.0.0.4:8080/"}
    result = _make_pool(tmp_path, document, "--out", "pool.json")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "pool.json"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # the Batch API takes it only there
    assert password in out.read_text()
    assert password not in result.stdout + result.stderr
    assert "  Manager http://flamenco:<redacted>@10.0.0.4:8080/" in result.stdout
    assert "WARNING: pool.json holds the password of the Manager's URL" in result.stdout
    # A YAML error says where, never quoting the line (it may hold the password).
    source = tmp_path / "broken.yaml"
    source.write_text(f'pool_id: p\nmanager_url: "http://u:{password}@h/\nvm_size: x\n')
    broken = subprocess.run(
        [sys.executable, str(MAKE_POOL), "--input", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert broken.returncode == 3 and "Traceback" not in broken.stderr
    assert f"{source}: not valid YAML: " in broken.stderr and ", column " in broken.stderr
    assert password not in broken.stderr and "http://" not in broken.stderr


def test_bad_input_lists_every_problem(tmp_path: Path) -> None:
    document = {
        **INPUTS["smb"],
        "subscription": "not-a-guid",
        "spot_nodes": -1,
        "subnet": "just-a-name",
        "manager_url": "10.0.0.4:8080",
        "vmsize": "typo",
        "storage": {"kind": "azure-files", "account": "Bad_Name", "share": "p", "mount": "/abs"},
        "packages": {"blender": None},
    }
    result = _make_pool(tmp_path, document)
    assert result.returncode == 3
    err = result.stderr
    assert "Traceback" not in err
    for where in (
        "subscription: 'not-a-guid' is not valid",
        "spot_nodes: -1: expected a whole number",
        "subnet: expected the subnet's resource id or VNET/SUBNET",
        "manager_url: expected an http:// or https:// URL",
        "vmsize: unknown key",
        "storage.account: 'Bad_Name' is not valid",
        "storage.mount: expected paths relative to AZ_BATCH_NODE_MOUNTS_DIR",
        "packages: must include flamenco-worker",
    ):
        assert where in err, where
    assert list(tmp_path.iterdir()) == [tmp_path / "input.yaml"]


def test_a_missing_key_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    result = _make_pool(tmp_path, INPUTS["smb"])
    assert result.returncode == 3
    assert "environment AZURE_STORAGE_KEY: is not set" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "input.yaml"]


def test_simulated_node_says_when_it_cannot_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no mount namespace can be had, the simulated node says so and turns
    the agent's storage check off instead of letting it wait forever."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "unshare").write_text(
        "#!/bin/sh\necho 'unshare: Operation not permitted' >&2\nexit 1\n"
    )
    (fake / "unshare").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    node = SimulatedNode(tmp_path / "batch" / "tasks", fixture_env("newer_spot"), {}, POOL, {})
    node.lay_out()
    assert node.storage_note.startswith("NOT simulated: unshare: Operation not permitted")
    assert node.environ["NODE_AGENT_STORAGE_MOUNTS"] == ""
    assert (tmp_path / "batch" / "tasks" / "fsmounts" / "flamenco").is_dir()


def _make_pool_text(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """make-pool on an input written as it is, with its memory capped (1 GiB): a
    YAML bomb must be refused, not fill the machine."""
    import resource

    source = tmp_path / "input.yaml"
    source.write_text(text)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [sys.executable, str(MAKE_POOL), "--input", str(source)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
        preexec_fn=cap,
    )


def _bomb(key: str) -> str:
    """A "billion laughs" document: nine levels of ten aliases each, at ``key``."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 10):
        aliases = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    document = yaml.safe_dump({k: v for k, v in INPUTS["nfs"].items() if k != key})
    return "\n".join(lines) + f"\n{document}{key}: *a9\n"


@pytest.mark.parametrize("key", ["spot_nodes", "packages"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, key: str) -> None:
    result = _make_pool_text(tmp_path, _bomb(key))
    assert result.returncode == 3, result.stderr[-2000:]
    assert "a YAML alias (*name) is not accepted here: write the value out" in result.stderr
    assert "at line 2, column" in result.stderr  # the first alias
    assert "Traceback" not in result.stderr and len(result.stderr) < 2000
    assert list(tmp_path.iterdir()) == [tmp_path / "input.yaml"]


def test_deep_nesting_and_duplicate_keys_are_refused(tmp_path: Path) -> None:
    deep = _make_pool_text(tmp_path, "spot_nodes: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert deep.returncode == 3, deep.stderr[-2000:]
    assert "nested more than 20 levels deep" in deep.stderr
    assert "Traceback" not in deep.stderr and len(deep.stderr) < 2000

    twice = yaml.safe_dump(INPUTS["nfs"]) + "spot_nodes: 500\n"
    line = twice.splitlines().index("spot_nodes: 10") + 1
    dup = _make_pool_text(tmp_path, twice)
    assert dup.returncode == 3, dup.stderr
    assert (
        f"the key 'spot_nodes' is given twice (first at line {line}); YAML would keep only "
        "the last: remove one" in dup.stderr
    )


def test_messages_never_quote_a_whole_value(tmp_path: Path) -> None:
    document = {
        **INPUTS["nfs"],
        "spot_nodes": list(range(50_000)),
        "pool_id": "x" * 100_000,
        "packages": {"blender": ["4.2"] * 1000, "flamenco-worker": None},
    }
    result = _make_pool_text(tmp_path, yaml.safe_dump(document))
    assert result.returncode == 3
    err = result.stderr
    assert "spot_nodes: a list of 50000 item(s): expected a whole number of nodes" in err
    assert "pool_id: 'xxxxxxxx" in err and "...' is not valid here" in err
    assert "packages.blender: expected a version, or null" in err
    assert len(err) < 3000, len(err)


def test_help_gives_defaults_exit_codes_and_an_example() -> None:
    result = subprocess.run(
        [sys.executable, str(MAKE_POOL), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # one line per option
    )
    assert result.returncode == 0
    out = result.stdout
    assert "(default: <pool_id>.json here)" in out
    assert "exit codes:" in out and "  3  invalid input" in out and "  1  the SDK check" in out
    assert "packaging/make-pool --input pool.yaml --out pool.json" in out


GPU_T4 = {**INPUTS["nfs"], "vm_size": "Standard_NC8as_T4_v3", "gpu": True}
DRIVER = {
    "name": "NvidiaGpuDriverLinux",
    "publisher": "Microsoft.HpcCompute",
    "type": "NvidiaGpuDriverLinux",
    "typeHandlerVersion": "1.6",
    "autoUpgradeMinorVersion": True,
}


@pytest.mark.parametrize(
    "vm_size, settings",
    [("Standard_NC8as_T4_v3", {"installGridNC": "true"}), ("Standard_NV36ads_A10_v5", None)],
)
def test_a_gpu_pool_gets_the_driver_and_renders_cycles_on_the_gpu(
    vm_size: str, settings: Any
) -> None:
    body = _generate({**GPU_T4, "vm_size": vm_size, "gpu_tags": ["Cycles GPU", "EEVEE"]})
    assert poolcheck.check_pool(body) == []
    machine = body["virtualMachineConfiguration"]
    assert machine["imageReference"]["offer"] == "ubuntu-24_04-lts"
    assert machine["extensions"] == [{**DRIVER, **({"settings": settings} if settings else {})}]
    env = {s["name"]: s["value"] for s in body["startTask"]["environmentSettings"]}
    assert env["NODE_AGENT_CYCLES_DEVICE"] == "OPTIX"
    assert env["NODE_AGENT_GPU_TAGS"] == "Cycles GPU, EEVEE"
    assert body["startTask"]["userIdentity"]["autoUser"]["elevationLevel"] == "nonadmin"


def test_a_cpu_pool_has_no_driver() -> None:
    body = _generate(copy.deepcopy(INPUTS["nfs"]))
    assert "extensions" not in body["virtualMachineConfiguration"]
    names = {s["name"] for s in body["startTask"]["environmentSettings"]}
    assert not names & {"NODE_AGENT_CYCLES_DEVICE", "NODE_AGENT_GPU_TAGS"}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"gpu": None},
            "gpu: vm_size Standard_NC8as_T4_v3 has NVIDIA GPUs: set gpu: true",
        ),
        (
            {"vm_size": "Standard_NC24ads_A100_v4"},
            "gpu: vm_size Standard_NC24ads_A100_v4: NVIDIA's driver extension has no Ubuntu "
            "24.04 driver for its family; make-pool provisions NCasT4_v3 (NVIDIA T4) and "
            "NVadsA10_v5 (NVIDIA A10) sizes",
        ),
        ({"vm_size": "standard_d16s_v5"}, "vm_size standard_d16s_v5: it has no NVIDIA GPU"),
        ({"vm_size": "Standard_NV8as_v4"}, "vm_size Standard_NV8as_v4: it has no NVIDIA GPU"),
        ({"gpu": "yes"}, "gpu: 'yes': expected true or false"),
        ({"gpu": False, "gpu_tags": "Cycles GPU"}, "gpu_tags: only for a GPU pool (gpu: true)"),
        ({"gpu_tags": [1, 2]}, "gpu_tags: expected tag names"),
    ],
)
def test_gpu_input_mistakes_are_named(change: dict[str, Any], message: str) -> None:
    document = {**GPU_T4, **change}
    if change.get("gpu", True) is None:
        del document["gpu"]
    pool, problems = load_input(document)
    assert pool is None
    assert any(message in str(p) for p in problems), problems


def test_make_pool_summarises_a_gpu_pool(tmp_path: Path) -> None:
    result = _make_pool(tmp_path, {**GPU_T4, "gpu_tags": "Cycles GPU"}, "--out", "gpu.json")
    assert result.returncode == 0, result.stderr
    assert (
        "  GPU: NVIDIA T4 (NCasT4_v3): NVIDIA's driver extension, Cycles on OPTIX, tags "
        "Cycles GPU where the driver lists a GPU" in result.stdout
    )
    assert "checked against azure-batch 15." in result.stdout


def test_the_check_reads_extension_settings_as_the_api_types_them() -> None:
    body = _generate(copy.deepcopy(GPU_T4))
    body["virtualMachineConfiguration"]["extensions"][0]["settings"] = {"installGridNC": True}
    assert poolcheck.check_pool(body) == [
        "pool.virtualMachineConfiguration.extensions[0].settings.installGridNC: True is not "
        "a JSON str"
    ]
