"""What text the store can hold, as pydantic types for the models that feed it.

PostgreSQL refuses the NUL character (``\\x00``) in ``text`` and ``varchar`` values, and a
64-bit SQLite INTEGER or a 32-bit PostgreSQL ``integer`` overflows on big numbers. Bodies that
reach the store are validated with these types, so such a value is a 422 naming the field
instead of a database error, and the OpenAPI document states the same limits.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field
from typing_extensions import TypeAliasType

__all__ = [
    "INT32_MAX",
    "JSON_INTEGER",
    "NAME_PATTERN",
    "NO_NUL_PATTERN",
    "JsonObject",
    "JsonValue",
    "StorableName",
    "StorableText",
]

NO_NUL_PATTERN = r"^[^\x00]*$"
"""Any text without a NUL character."""
NAME_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
"""Text without NUL with at least one character that is not white space."""
INT32_MAX = 2**31 - 1
"""The largest value of a PostgreSQL ``integer`` column (counts such as token counts)."""


def _json_integer(value: object) -> object:
    # JSON Schema's integer: 96.0 is one, true and "96" are not (with strict validation after)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JSON_INTEGER = BeforeValidator(_json_integer)
"""Makes a strict ``int`` an integer as JSON Schema has it: a number without a fraction (``96``
or ``96.0``), never a boolean or a string. Use it after the field's bounds, e.g.
``Annotated[int, Field(strict=True, ge=0), JSON_INTEGER]`` (before them, pydantic's JSON schema
loses the bounds)."""


StorableText = Annotated[str, Field(pattern=NO_NUL_PATTERN)]
"""Text the store can hold (no NUL character)."""
StorableName = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
"""A name: 1 to 200 characters, not only white space, no NUL."""

JsonValue = TypeAliasType(
    "JsonValue",
    "bool | int | float | StorableText | list[JsonValue] | dict[StorableText, JsonValue] | None",
)
"""A JSON value whose strings and keys, at any depth, the store can hold."""
JsonObject = dict[StorableText, JsonValue]
"""A JSON object (inputs, context, params) whose keys and strings the store can hold."""
