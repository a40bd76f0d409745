"""The JSON type of a decoded value, by the name error messages give it."""

from __future__ import annotations

__all__ = ["json_kind"]


def json_kind(value: object) -> str:
    """``null``, ``bool``, ``int``, ``number``, ``string``, ``list`` or ``object``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
