"""Check a pool body against the ``azure-batch`` 15.x models (operator side only).

The 15.x models (REST API 2025-06-01) are mappings that accept anything: an
unknown key is kept as an "additional property", ``"false"`` reads as True, an
unknown enum value stays a plain string, and there is no ``validate()``. So this
walks the document against each model's declared fields instead: every key must
be a field the API accepts on create (a misspelt or retired one fails), required
fields must be there, and values must have the declared JSON type and enum value.
"""

from __future__ import annotations

import datetime
import enum
import sys
import typing
from typing import Any

from azure.batch import models
from azure.batch._version import VERSION

MODEL_BASE = models.BatchPoolCreateOptions.__mro__[1]  # the SDK's generated _Model
_PRIMITIVES: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    bool: (bool,),
    float: (int, float),
}


def _fields(model: type) -> dict[str, tuple[Any, bool, bool]]:
    """REST name -> (type, required, accepted on create), from the model's
    declared fields (the SDK builds this table when a model is first made)."""
    model.__new__(model)  # fills _attr_to_rest_field
    module = sys.modules[model.__module__]
    hints = typing.get_type_hints(model, {**vars(module), "_models": models})
    table = {}
    for attribute, field in model._attr_to_rest_field.items():  # type: ignore[attr-defined]
        hint = hints[attribute]
        optional = type(None) in typing.get_args(hint)
        creatable = field._visibility is None or "create" in field._visibility
        table[field._rest_name] = (hint, not optional, creatable)
    return table


def _check_value(hint: Any, value: Any, where: str) -> list[str]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:
            allowed = [m.value for m in enums[0]]
            if not isinstance(value, str) or value.lower() not in [a.lower() for a in allowed]:
                return [f"{where}: {value!r} is not one of {', '.join(allowed)}"]
            return []
        return _check_value(args[0], value, where) if len(args) == 1 else []
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [
            p for i, item in enumerate(value) for p in _check_value(args[0], item, f"{where}[{i}]")
        ]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        # The values too: VMExtension.settings is dict[str, str] in the API's models.
        return [
            p for k, item in value.items() for p in _check_value(args[-1], item, f"{where}.{k}")
        ]
    if isinstance(hint, type) and issubclass(hint, MODEL_BASE):
        return check_model(hint, value, where)
    if hint is datetime.timedelta:
        return [] if isinstance(value, str) else [f"{where}: expected an ISO 8601 duration"]
    expected = _PRIMITIVES.get(hint)
    if expected is not None and (
        not isinstance(value, expected) or (bool not in expected and isinstance(value, bool))
    ):
        return [f"{where}: {value!r} is not a JSON {hint.__name__}"]
    return []


def check_model(model: type, value: Any, where: str) -> list[str]:
    """Every problem of ``value`` as a ``model`` on create."""
    if not isinstance(value, dict):
        return [f"{where}: expected an object ({model.__name__})"]
    fields = _fields(model)
    problems = []
    for key, item in value.items():
        if key not in fields:
            problems.append(
                f"{where}.{key}: not a field of {model.__name__} in azure-batch {VERSION} "
                "(misspelt, or retired from the API)"
            )
            continue
        hint, _, creatable = fields[key]
        if not creatable:
            problems.append(f"{where}.{key}: read-only, not accepted on create")
            continue
        problems.extend(_check_value(hint, item, f"{where}.{key}"))
    for key, (_, required, _) in fields.items():
        if required and key not in value:
            problems.append(f"{where}.{key}: required by {model.__name__}")
    return problems


def check_pool(document: Any) -> list[str]:
    """Every problem of a pool body for ``az batch pool create --json-file``; also
    that the SDK's own model gives back the same document."""
    problems = check_model(models.BatchPoolCreateOptions, document, "pool")
    if not problems and models.BatchPoolCreateOptions(document).as_dict() != document:
        problems.append("pool: the SDK's model does not give back the same document")
    return problems


def sdk_version() -> str:
    """The azure-batch version the check used."""
    return VERSION
