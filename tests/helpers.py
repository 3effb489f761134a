"""Shared test helpers: fixture paths and loaders."""

from __future__ import annotations

from pathlib import Path

from node_agent.envfile import load_env_file

FIXTURES = Path(__file__).parent / "fixtures"
AZ_ENV = FIXTURES / "az_env"
GOOD_ENVS = sorted(AZ_ENV.glob("*.env"))
BROKEN_ENVS = sorted((AZ_ENV / "broken").glob("*.env"))


def fixture_env(name: str) -> dict[str, str]:
    """The variables of ``tests/fixtures/az_env/<name>.env``."""
    return load_env_file(str(AZ_ENV / f"{name}.env"))
