"""What the checks look at: the environment, and the model and settings where they
parse."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from node_agent.common.errors import InvalidInput
from node_agent.config.settings import Settings, load_settings, package_config
from node_agent.node.env import BatchEnv
from node_agent.node.flavour import Flavour, resolve_flavour
from node_agent.node.layout import Layout

NEEDS_ENV = "skipped: the environment does not parse"


@dataclass(frozen=True)
class Context:
    """What the checks look at: the environment and, where they parse, the model and
    the settings."""

    environ: Mapping[str, str]
    env: Optional[BatchEnv]
    env_problems: tuple[str, ...]
    settings: Optional[Settings]
    settings_problems: tuple[str, ...]

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], settings: Optional[Settings] = None
    ) -> Context:
        """Parse what can be parsed; keep the problems of what cannot. ``settings``:
        the ones resolved already (the running agent's, command line included)."""
        env: Optional[BatchEnv] = None
        env_problems: tuple[str, ...] = ()
        try:
            env = BatchEnv.from_environ(environ)
        except InvalidInput as exc:
            env_problems = tuple(str(p) for p in exc.problems)
        settings_problems: tuple[str, ...] = ()
        if settings is None:
            try:
                settings = load_settings(environ, {}, package_config(env))
            except InvalidInput as exc:
                settings_problems = tuple(str(p) for p in exc.problems)
        return cls(environ, env, env_problems, settings, settings_problems)

    @property
    def layout(self) -> Optional[Layout]:
        """The node's paths, when the environment parses."""
        return Layout.for_env(self.env) if self.env else None

    @property
    def flavour(self) -> Optional[Flavour]:
        """The worker generation, when it can be told."""
        if self.env is None:
            return None
        worker = self.env.find_package("flamenco-worker")
        chosen = self.settings.flavour if self.settings else Flavour.AUTO
        return resolve_flavour(chosen, worker.version if worker else None).flavour
