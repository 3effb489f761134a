"""The operator's pool input, and the pool JSON it becomes (operator side only).

``load_input`` reads the small YAML document described in docs/pool.md ("Creating the
pool") and reports every problem at once; ``pool_document`` turns it into the body
of ``az batch pool create --json-file`` (Batch REST API 2025-06-01, the one
``azure-batch`` 15.x speaks). Pure: the storage key comes in as an argument, the
caller reads it from the environment. Never shipped in the node's package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

import yaml

from node_agent.common.errors import Problem
from node_agent.config.specs import BY_KEY

# Ubuntu 24.04 (system python3 3.12); 22.04's Batch support ends on 30 June 2027.
IMAGE = {
    "publisher": "Canonical",
    "offer": "ubuntu-24_04-lts",
    "sku": "server",
    "version": "latest",
}
NODE_AGENT_SKU = "batch.node.ubuntu 24.04"
START_COMMAND = (
    "/bin/sh -c 'exec python3 -I \"$AZ_BATCH_APP_PACKAGE_flamenco_worker/node-agent\" run'"
)
# SMB: without dir_mode/file_mode the mount belongs to root, 0755, and the non-admin
# start task cannot write a frame.
SMB_OPTIONS = "-o vers=3.0,dir_mode=0777,file_mode=0777"
DEFAULT_KEY_VARIABLE = "AZURE_STORAGE_KEY"
DEFAULT_MOUNT = "flamenco"
PACKAGES = ("blender", "ffmpeg", "flamenco-worker")
# NVIDIA's driver for GPU pools: the "NVIDIA GPU Driver Extension for Linux", on the
# list of extensions Batch allows at pool creation (learn.microsoft.com, Batch, "Use
# extensions with Batch pools"; schema: "NVIDIA GPU Driver Extension for Linux",
# typeHandlerVersion 1.6, minor versions upgraded automatically).
DRIVER_EXTENSION = {
    "name": "NvidiaGpuDriverLinux",
    "publisher": "Microsoft.HpcCompute",
    "type": "NvidiaGpuDriverLinux",
    "typeHandlerVersion": "1.6",
    "autoUpgradeMinorVersion": True,
}
AMD_SIZE = re.compile(r"standard_nv\d+as_v4|standard_ng\d+.*", re.I)  # AMD GPUs: no CUDA
NVIDIA_SIZE = re.compile(r"standard_n[cdv]\d+.*", re.I)


@dataclass(frozen=True)
class GpuFamily:
    """An NVIDIA VM family make-pool provisions, and how."""

    family: str  # as NVIDIA's extension names it
    gpu: str
    settings: tuple[tuple[str, str], ...]  # the extension's settings
    cycles_device: str  # Blender's --cycles-device on its nodes


# The driver extension's own resource lists (github.com/Azure/azhpc-extensions,
# NvidiaGPU/resources.json and Nvidia-GPU-Linux-Resources.json, as of April 2026)
# give Ubuntu 24.04 GRID drivers only, for these families; its CUDA drivers stop at
# Ubuntu 22.04 (NCv3 V100, NC_A100_v4 are CUDA-only families). On NC sizes GRID is
# chosen with the runtime setting installGridNC. GRID drivers run CUDA and OptiX.
GPU_FAMILIES = (
    (
        re.compile(r"standard_nc\d+as_t4_v3", re.I),
        GpuFamily("NCasT4_v3", "NVIDIA T4", (("installGridNC", "true"),), "OPTIX"),
    ),
    (
        re.compile(r"standard_nv\d+ads_a10_v5", re.I),
        GpuFamily("NVadsA10_v5", "NVIDIA A10", (), "OPTIX"),
    ),
)
STORAGE_KINDS = ("azure-files", "nfs", "none")

# The input is three levels deep at most; a document nested deeper is refused before
# it can exhaust the composer's recursion.
MAX_DEPTH = 20
SHOWN = 60  # characters of a value a message quotes

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._()-]{0,89}")
_POOL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUBNET = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/"
    r"virtualNetworks/[^/]+/subnets/[^/]+",
    re.I,
)
_TOP_KEYS = (
    "subscription",
    "resource_group",
    "batch_account",
    "pool_id",
    "vm_size",
    "dedicated_nodes",
    "spot_nodes",
    "subnet",
    "network_resource_group",
    "manager_url",
    "storage",
    "packages",
    "short_application_ids",
    "gpu",
    "gpu_tags",
)
_STORAGE_KEYS = {
    "azure-files": ("kind", "mount", "account", "share", "url", "key_variable", "mount_options"),
    "nfs": ("kind", "mount", "source", "mount_options"),
    "none": ("kind",),
}


class Refused(yaml.MarkedYAMLError):
    """YAML that make-pool does not take, though YAML allows it (an alias, a
    duplicate key, nesting past ``MAX_DEPTH``)."""


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` without the parts of YAML a page of input never needs and an
    attacker can abuse: aliases (a few lines expand to gigabytes: "billion
    laughs"), deep nesting (a recursion error), duplicate keys (the last one would
    silently win)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise Refused(
                problem="a YAML alias (*name) is not accepted here: write the value out",
                problem_mark=event.start_mark,
            )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise Refused(
                    problem=f"nested more than {MAX_DEPTH} levels deep; the pool input has 3",
                    problem_mark=event.start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = first.setdefault(key_node.value, key_node.start_mark.line)
            if line != key_node.start_mark.line:
                raise Refused(
                    problem=f"the key {shown(key_node.value)} is given twice (first at line "
                    f"{line + 1}); YAML would keep only the last: remove one",
                    problem_mark=key_node.start_mark,
                )
        return super().construct_mapping(node, deep)


def parse_input(text: str) -> Any:
    """The operator's YAML document; ``yaml.YAMLError`` (``Refused`` for what YAML
    allows and make-pool does not) when it cannot be taken."""
    return yaml.load(text, Loader=_StrictLoader)


def shown(value: Any) -> str:
    """A value as a message quotes it: short, whatever the value (a value can be a
    megabyte of text, or a list of millions)."""
    if isinstance(value, Mapping):
        return f"a mapping of {len(value)} key(s)"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[: SHOWN - 4]}...{text[-1]}"


@dataclass(frozen=True)
class Storage:
    """The shared storage Batch mounts on every node."""

    kind: str  # azure-files, nfs or none
    mount: str  # relativeMountPath under $AZ_BATCH_NODE_MOUNTS_DIR
    account: Optional[str] = None  # azure-files
    url: Optional[str] = None  # azure-files: https://<account>.file.core.windows.net/<share>
    key_variable: Optional[str] = None  # azure-files: where the account key is read from
    source: Optional[str] = None  # nfs: server:/export
    mount_options: Optional[str] = None


@dataclass(frozen=True)
class PoolInput:
    """What the operator chose."""

    subscription: str
    resource_group: str
    batch_account: str
    pool_id: str
    vm_size: str
    dedicated_nodes: int
    spot_nodes: int
    subnet_id: str
    manager_url: str
    storage: Storage
    packages: tuple[tuple[str, Optional[str]], ...]  # (id, version or None: default)
    short_application_ids: bool
    gpu: Optional[GpuFamily] = None  # the NVIDIA driver and Cycles on the GPU
    gpu_tags: tuple[str, ...] = ()  # NODE_AGENT_GPU_TAGS

    @property
    def needs_key(self) -> bool:
        """Whether the pool JSON carries a storage account key (a secret)."""
        return self.storage.kind == "azure-files"

    @property
    def manager_password(self) -> Optional[str]:
        """The password of a ``user:password@`` Manager URL (a secret), if any."""
        return urlsplit(self.manager_url).password


class _Reader:
    """Typed reads from a mapping; problems collected, never raised."""

    def __init__(self, document: Mapping[str, Any], where: str, problems: list[Problem]):
        self.document, self.where, self.problems = document, where, problems

    def add(self, key: str, message: str) -> None:
        self.problems.append(Problem(f"{self.where}{key}", message))

    def text(self, key: str, pattern: Optional[re.Pattern[str]] = None, default: str = "") -> str:
        value = self.document.get(key, default)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or value == "":
            self.add(
                key,
                "is missing; expected a value"
                if key not in self.document
                else "expected a non-empty text value",
            )
            return default
        text = str(value).strip()
        if pattern is not None and not pattern.fullmatch(text):
            self.add(key, f"{shown(text)} is not valid here; expected {pattern.pattern}")
        return text

    def optional_text(self, key: str) -> Optional[str]:
        return self.text(key) if self.document.get(key) is not None else None

    def count(self, key: str) -> int:
        value = self.document.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.add(key, f"{shown(value)}: expected a whole number of nodes, 0 or more")
            return 0
        return value

    def flag(self, key: str) -> bool:
        value = self.document.get(key, False)
        if not isinstance(value, bool):
            self.add(key, f"{shown(value)}: expected true or false")
            return False
        return value

    def unknown(self, known: tuple[str, ...]) -> None:
        for key in self.document:
            if key not in known:
                name = key if isinstance(key, str) and len(key) <= SHOWN else shown(key)
                self.add(name, f"unknown key; known: {', '.join(known)}")


def _subnet(reader: _Reader, subscription: str, resource_group: str) -> str:
    text = reader.text("subnet")
    if _SUBNET.fullmatch(text):
        return text
    parts = text.split("/")
    if len(parts) == 2 and all(_NAME.fullmatch(p) for p in parts):
        group = reader.optional_text("network_resource_group") or resource_group
        return (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"Microsoft.Network/virtualNetworks/{parts[0]}/subnets/{parts[1]}"
        )
    if text:
        reader.add("subnet", "expected the subnet's resource id or VNET/SUBNET")
    return text


def _storage(value: Any, problems: list[Problem]) -> Storage:
    if not isinstance(value, Mapping):
        problems.append(Problem("storage", "expected a mapping with kind: azure-files|nfs|none"))
        return Storage("none", "")
    reader = _Reader(value, "storage.", problems)
    kind = reader.text("kind")
    if kind not in STORAGE_KINDS:
        reader.add("kind", f"{shown(kind)}: expected one of {', '.join(STORAGE_KINDS)}")
        return Storage("none", "")
    reader.unknown(_STORAGE_KEYS[kind])
    if kind == "none":
        return Storage("none", "")
    mount = reader.text("mount", default=DEFAULT_MOUNT)
    try:
        if len(BY_KEY["storage_mounts"].parse(mount)) != 1:
            reader.add("mount", "expected one relative path")
    except ValueError as exc:
        reader.add("mount", str(exc))
    options = reader.optional_text("mount_options")
    if kind == "nfs":
        return Storage(kind, mount, source=reader.text("source"), mount_options=options)
    account = reader.text("account", re.compile(r"[a-z0-9]{3,24}"))
    url = reader.optional_text("url") or (
        f"https://{account}.file.core.windows.net/{reader.text('share')}"
    )
    return Storage(
        kind,
        mount,
        account=account,
        url=url,
        key_variable=reader.optional_text("key_variable") or DEFAULT_KEY_VARIABLE,
        mount_options=options or SMB_OPTIONS,
    )


def _packages(value: Any, problems: list[Problem]) -> tuple[tuple[str, Optional[str]], ...]:
    if value is None:
        return tuple((p, None) for p in PACKAGES)
    if not isinstance(value, Mapping) or not value:
        problems.append(Problem("packages", "expected a mapping of package id: version or null"))
        return ()
    chosen = []
    for package, version in value.items():
        name = package if isinstance(package, str) and len(package) <= SHOWN else shown(package)
        scalar = isinstance(version, (str, int, float)) and not isinstance(version, bool)
        if version is not None and (not scalar or not str(version).strip()):
            problems.append(Problem(f"packages.{name}", "expected a version, or null"))
            continue
        chosen.append((str(name), None if version is None else str(version).strip()))
    if "flamenco-worker" not in dict(chosen):
        problems.append(Problem("packages", "must include flamenco-worker (node-agent is in it)"))
    if len(chosen) > 10:
        problems.append(Problem("packages", "Batch allows at most 10 package references"))
    return tuple(chosen)


def _gpu(reader: _Reader, vm_size: str) -> tuple[Optional[GpuFamily], tuple[str, ...]]:
    """The GPU family to provision (None: a CPU pool), and the tags for its GPU."""
    document = reader.document
    gpu = reader.flag("gpu") if "gpu" in document else None
    nvidia = bool(NVIDIA_SIZE.fullmatch(vm_size)) and not AMD_SIZE.fullmatch(vm_size)
    known = [f"{f.family} ({f.gpu})" for _, f in GPU_FAMILIES]
    tags: tuple[str, ...] = ()
    if "gpu_tags" in document:
        value = document["gpu_tags"]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        tags = BY_KEY["gpu_tags"].parse(value) if isinstance(value, str) else ()
        if not tags:
            reader.add("gpu_tags", "expected tag names, comma separated or a YAML list")
        elif gpu is not True:
            reader.add("gpu_tags", "only for a GPU pool (gpu: true)")
    if gpu is None and nvidia:
        reader.add(
            "gpu",
            f"vm_size {vm_size} has NVIDIA GPUs: set gpu: true so its nodes get NVIDIA's "
            "driver and Blender renders Cycles on them, or gpu: false to leave them unused",
        )
    if not gpu:
        return None, tags
    family = next((f for pattern, f in GPU_FAMILIES if pattern.fullmatch(vm_size)), None)
    if family is None:
        why = (
            "NVIDIA's driver extension has no Ubuntu 24.04 driver for its family"
            if nvidia
            else "it has no NVIDIA GPU"
        )
        reader.add(
            "gpu",
            f"vm_size {vm_size}: {why}; make-pool provisions {' and '.join(known)} sizes "
            "(or use gpu: false, or a custom image with the driver)",
        )
    return family, tags


def load_input(document: Any) -> tuple[Optional[PoolInput], list[Problem]]:
    """The operator's input, or every problem with it."""
    problems: list[Problem] = []
    if not isinstance(document, Mapping):
        return None, [Problem("input", "expected a YAML mapping (see packaging/pool.example.yaml)")]
    reader = _Reader(document, "", problems)
    reader.unknown(_TOP_KEYS)
    subscription = reader.text("subscription", _GUID)
    resource_group = reader.text("resource_group", _NAME)
    manager_url = reader.text("manager_url")
    try:
        BY_KEY["manager_url"].parse(manager_url)
    except ValueError as exc:
        reader.add("manager_url", str(exc))
    vm_size = reader.text("vm_size")
    gpu, gpu_tags = _gpu(reader, vm_size)
    pool = PoolInput(
        subscription=subscription,
        resource_group=resource_group,
        batch_account=reader.text("batch_account", re.compile(r"[a-z0-9]{3,24}")),
        pool_id=reader.text("pool_id", _POOL_ID),
        vm_size=vm_size,
        dedicated_nodes=reader.count("dedicated_nodes"),
        spot_nodes=reader.count("spot_nodes"),
        subnet_id=_subnet(reader, subscription, resource_group),
        manager_url=manager_url,
        storage=_storage(document.get("storage", {"kind": "none"}), problems),
        packages=_packages(document.get("packages"), problems),
        short_application_ids=reader.flag("short_application_ids"),
        gpu=gpu,
        gpu_tags=gpu_tags,
    )
    return (None if problems else pool), problems


def application_id(pool: PoolInput, package: str) -> str:
    """The package reference's id: fully qualified, as the 2025-06-01 API documents
    it for pool creation, or the bare name when the operator asked for it."""
    if pool.short_application_ids:
        return package
    return (
        f"/subscriptions/{pool.subscription}/resourceGroups/{pool.resource_group}/providers/"
        f"Microsoft.Batch/batchAccounts/{pool.batch_account}/applications/{package}"
    )


def _mount_configuration(storage: Storage, key: Optional[str]) -> list[dict[str, Any]]:
    if storage.kind == "azure-files":
        assert key is not None, "the caller reads the key for azure-files"
        share = {
            "accountName": storage.account,
            "azureFileUrl": storage.url,
            "accountKey": key,
            "relativeMountPath": storage.mount,
            "mountOptions": storage.mount_options,
        }
        return [{"azureFileShareConfiguration": share}]
    if storage.kind == "nfs":
        nfs = {"source": storage.source, "relativeMountPath": storage.mount}
        if storage.mount_options:
            nfs["mountOptions"] = storage.mount_options
        return [{"nfsMountConfiguration": nfs}]
    return []


def pool_document(pool: PoolInput, key: Optional[str] = None) -> dict[str, Any]:
    """The body of ``az batch pool create --json-file``. ``key``: the storage
    account key, for Azure Files (the API has no other place for it)."""
    settings = [{"name": "FLAMENCO_MANAGER_URL", "value": pool.manager_url}]
    if pool.storage.kind != "none":
        settings.append({"name": "NODE_AGENT_STORAGE_MOUNTS", "value": pool.storage.mount})
    machine: dict[str, Any] = {"imageReference": dict(IMAGE), "nodeAgentSKUId": NODE_AGENT_SKU}
    if pool.gpu is not None:
        extension: dict[str, Any] = dict(DRIVER_EXTENSION)
        if pool.gpu.settings:
            extension["settings"] = dict(pool.gpu.settings)
        machine["extensions"] = [extension]
        settings.append({"name": "NODE_AGENT_CYCLES_DEVICE", "value": pool.gpu.cycles_device})
        if pool.gpu_tags:
            settings.append({"name": "NODE_AGENT_GPU_TAGS", "value": ", ".join(pool.gpu_tags)})
    references = []
    for package, version in pool.packages:
        reference = {"applicationId": application_id(pool, package)}
        if version is not None:
            reference["version"] = version
        references.append(reference)
    document: dict[str, Any] = {
        "id": pool.pool_id,
        "vmSize": pool.vm_size,
        "virtualMachineConfiguration": machine,
        "networkConfiguration": {"subnetId": pool.subnet_id},
        "targetDedicatedNodes": pool.dedicated_nodes,
        "targetLowPriorityNodes": pool.spot_nodes,
        "taskSlotsPerNode": 1,
        "applicationPackageReferences": references,
    }
    mounts = _mount_configuration(pool.storage, key)
    if mounts:
        document["mountConfiguration"] = mounts
    document["startTask"] = {
        "commandLine": START_COMMAND,
        "environmentSettings": settings,
        "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
        "maxTaskRetryCount": 3,
        "waitForSuccess": False,
    }
    return document
