"""The import rules between node_agent's folders: who may use whom.

Each folder says who its code is for. The node's side (everything but ``fleet`` and
``sim``) ships in the worker package and never imports the operator's side; below
that, each folder imports only the folders beneath it, so a module's place tells
what it can depend on. Every import counts, a function's own included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

NODE_AGENT = Path(__file__).resolve().parent.parent / "node_agent"

NODE_SIDE = ("common", "node", "config", "bootstrap", "manager", "imds", "runtime", "doctor")
TOP = "(top)"  # cli.py, agent.py, __main__.py, __init__.py
# Which groups each group may import (its own always).
MAY_IMPORT: Mapping[str, frozenset[str]] = {
    "common": frozenset(),
    "node": frozenset({"common"}),
    "config": frozenset({"common", "node"}),
    "bootstrap": frozenset({"common", "node", "config"}),
    "manager": frozenset({"common", "node", "config"}),
    "imds": frozenset({"common"}),  # Azure only: knows nothing of Flamenco
    "runtime": frozenset({"common", "node", "config", "bootstrap", "manager", "imds"}),
    "doctor": frozenset({"common", "node", "config", "bootstrap", "manager", "imds", "runtime"}),
    TOP: frozenset(NODE_SIDE),
    "fleet": frozenset(NODE_SIDE),
    "sim": frozenset(NODE_SIDE),
}
# The one way from the node's side to the operator's: `node-agent fleet` loads the
# farm commands when (and only when) the operator runs them; the node's package
# lacks them, and cli says how to install them.
DEFERRED = {("cli", "node_agent.fleet.command")}


def group_of(module: str) -> str:
    """``node_agent.a.b``'s group: its folder, or TOP for the modules at the top."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (NODE_AGENT / parts[1]).is_dir()):
        return parts[1]
    return TOP


def imports(source: str, module: str) -> Iterator[tuple[str, bool]]:
    """Every node_agent module ``source`` imports, and whether a function does it."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            deeper = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                yield from ((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module.split(".")[: -child.level]
                    base = ".".join([*package, *([base] if base else [])])
                # `from package import module` imports that module, not just the package
                named = [f"{base}.{a.name}" for a in child.names]
                modules = [n for n in named if _is_module(n)] or [base]
                yield from ((n, in_function) for n in modules)
            yield from visit(child, deeper)

    for name, in_function in visit(ast.parse(source), False):
        if name.startswith("node_agent.") and _is_module(name):
            yield name, in_function


def _is_module(name: str) -> bool:
    path = NODE_AGENT.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(sources: Mapping[str, str]) -> list[str]:
    """Every import in ``sources`` (module name -> its source) that breaks a rule."""
    found = []
    for module, source in sorted(sources.items()):
        group = group_of(module)
        leaf = module.partition(".")[2]
        for target, in_function in imports(source, module):
            wanted = group_of(target)
            if wanted == group or wanted in MAY_IMPORT[group]:
                continue
            if in_function and (leaf, target) in DEFERRED:
                continue
            found.append(f"{module} ({group}) imports {target} ({wanted})")
    return found


def _sources() -> dict[str, str]:
    sources = {}
    for path in NODE_AGENT.rglob("*.py"):
        parts = path.relative_to(NODE_AGENT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path.read_text()
    return sources


def test_every_import_follows_the_rules() -> None:
    sources = _sources()
    assert len(sources) > 50
    assert violations(sources) == []


def test_every_folder_has_a_rule() -> None:
    folders = {p.name for p in NODE_AGENT.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(MAY_IMPORT) - {TOP}


def test_a_node_module_that_imports_the_operators_side_is_named() -> None:
    sources = _sources()
    sources["node_agent.runtime.supervise"] += "\nfrom node_agent.fleet import model\n"
    sources["node_agent.doctor.report"] += "\ndef f():\n    import node_agent.sim.node\n"
    sources["node_agent.imds.events"] += "\nfrom node_agent.manager import api\n"
    sources["node_agent.common.log"] += "\nfrom node_agent.node.env import BatchEnv\n"
    sources["node_agent.agent"] += "\ndef g():\n    from node_agent.fleet import command\n"
    assert violations(sources) == [
        "node_agent.agent ((top)) imports node_agent.fleet.command (fleet)",
        "node_agent.common.log (common) imports node_agent.node.env (node)",
        "node_agent.doctor.report (doctor) imports node_agent.sim.node (sim)",
        "node_agent.imds.events (imds) imports node_agent.manager.api (manager)",
        "node_agent.runtime.supervise (runtime) imports node_agent.fleet.model (fleet)",
    ]


def test_the_command_line_loads_the_farm_commands_only_when_asked() -> None:
    source = (NODE_AGENT / "cli.py").read_text()
    assert ("node_agent.fleet.command", True) in set(imports(source, "node_agent.cli"))
    assert violations({"node_agent.cli": "from node_agent.fleet import command\n"})
