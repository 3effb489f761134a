"""The azure-batch SDK's option classes fleet needs that 15.1.0 keeps out of its
public ``azure.batch.models`` namespace (``BatchNodeRebootOptions``: the reboot
fails without it, ``ValueError``). Each is taken from the public namespace when a
release exports it there, else from the private module that holds it in 15.x:
one place to change when the SDK moves them again."""

from __future__ import annotations

import importlib
from typing import Any

PLACES = ("azure.batch.models", "azure.batch.models._models")


def sdk_model(name: str, places: tuple[str, ...] = PLACES) -> Any:
    """The SDK's model class ``name``, from the first of ``places`` that has it;
    ``ModuleNotFoundError`` naming them when none does (``node-agent fleet`` then
    says which extra to install)."""
    for place in places:
        try:
            found = getattr(importlib.import_module(place), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise ModuleNotFoundError(
        f"azure-batch has no {name} in {', '.join(places)}", name="azure.batch"
    )


BatchNodeRebootOptions = sdk_model("BatchNodeRebootOptions")
