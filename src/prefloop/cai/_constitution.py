"""A constitution: a named list of principles, read from a small YAML file.

Each principle carries the three requests Constitutional AI asks of a model (Bai et al., 2022,
"Constitutional AI: Harmlessness from AI Feedback"): a **critique** request (what to look for
in an answer), a **revision** request (how to rewrite it after the critique) and a
**comparison** question (which of two answers is better under the principle, answered (A) or
(B) by a judge). The loader checks every field and names the file and line of the first
problem, so an edited constitution fails before any model is called.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from prefloop.errors import ImportFileError, InvalidInputError

DEFAULT_CONSTITUTION = "default_constitution.yaml"
"""The file name of the packaged constitution (in :mod:`prefloop.cai`)."""
PRINCIPLE_FIELDS = ("id", "critique", "revision", "comparison")
_TOP_FIELDS = ("name", "description", "principles")
_MAX_ID = 80
_EXAMPLE = (
    "principles:\n  - id: harm\n    critique: Name anything harmful in your answer.\n"
    "    revision: Rewrite the answer without it.\n"
    "    comparison: Which reply is less harmful?"
)


@dataclass(frozen=True, slots=True)
class Principle:
    """One principle of a constitution (the YAML keys of the same names)."""

    id: str
    critique: str
    revision: str
    comparison: str

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in PRINCIPLE_FIELDS}


@dataclass(frozen=True, slots=True)
class Constitution:
    """A named, non-empty tuple of principles with distinct ids."""

    name: str
    principles: tuple[Principle, ...]
    description: str = ""
    source: str = ""
    """Where it was read from (a path, or ``"packaged default"``)."""

    def __post_init__(self) -> None:
        if not self.principles:
            raise InvalidInputError(f"constitution {self.name!r} has no principles; add one")
        ids = [p.id for p in self.principles]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise InvalidInputError(
                f"constitution {self.name!r} has principle id(s) {repeated} more than once; "
                "give each principle its own id"
            )

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.principles)

    def principle(self, principle_id: str) -> Principle:
        """The principle with this id, or an error listing the ids there are."""
        for principle in self.principles:
            if principle.id == principle_id:
                return principle
        raise InvalidInputError(
            f"constitution {self.name!r} has no principle {principle_id!r}; its principles are "
            f"{', '.join(self.ids)}"
        )

    def draw(self, count: int, seed: int, only: str | None = None) -> list[Principle]:
        """``count`` principles drawn uniformly at random with ``seed`` (the same seed, the
        same draws); ``only`` names one principle to use every time instead."""
        if only is not None:
            return [self.principle(only)] * count
        rng = random.Random(seed)
        return [rng.choice(self.principles) for _ in range(count)]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "principles": [p.to_json() for p in self.principles],
        }


def default_constitution_text() -> str:
    """The packaged constitution's YAML, comments included (a starting point to edit)."""
    return resources.files("prefloop.cai").joinpath(DEFAULT_CONSTITUTION).read_text("utf-8")


def default_constitution() -> Constitution:
    """The packaged constitution (six principles: harm, honesty, respect, refusal, privacy,
    helpfulness)."""
    return parse_constitution(default_constitution_text(), source="packaged default")


def load_constitution(path: str | Path | None = None) -> Constitution:
    """The constitution in the YAML file ``path`` (None: the packaged default).

    Errors (:class:`~prefloop.errors.InvalidInputError`, with ``FILE:LINE`` where there is a
    line) say what is wrong and how the file should look: a missing file, YAML that does not
    parse, a missing or unknown key, an empty list of principles, a field that is not text, an
    id used twice.
    """
    if path is None:
        return default_constitution()
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(
            f"constitution file {str(file)!r} does not exist; write one with "
            "`prefloop cai constitution -o FILE` and edit it"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"{file} is not UTF-8 text; save the constitution as UTF-8"
        ) from None
    return parse_constitution(text, source=str(file))


def parse_constitution(text: str, *, source: str = "<constitution>") -> Constitution:
    """A constitution from YAML text (:func:`load_constitution` reads the file)."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "not valid YAML"
        raise ImportFileError(
            source,
            line,
            f"the constitution is not valid YAML: {problem} (check indentation "
            "and quote text that contains ': ')",
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{source}: the constitution is not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{source}: a constitution is a YAML mapping with a 'principles' list, like\n{_EXAMPLE}"
        )
    _no_unknown_keys(data, node, _TOP_FIELDS, source, "the constitution")
    name = data.get("name", Path(source).stem if source.endswith((".yaml", ".yml")) else "custom")
    description = data.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise ImportFileError(
                source, _line(node, key), f"'{key}' must be text, not {_kind(value)}"
            )
    if not str(name).strip():
        raise ImportFileError(source, _line(node, "name"), "'name' is empty; give a short name")
    if "principles" not in data:
        raise InvalidInputError(
            f"{source}: the constitution has no 'principles' list, like\n{_EXAMPLE}"
        )
    items = data["principles"]
    items_node = _child(node, "principles")
    if not isinstance(items, list):
        raise ImportFileError(
            source,
            _line(node, "principles"),
            f"'principles' must be a list (each item starting with '- '), not {_kind(items)}",
        )
    if not items:
        raise ImportFileError(
            source,
            _line(node, "principles"),
            "'principles' is empty; a constitution needs at least one principle",
        )
    principles: list[Principle] = []
    seen: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        item_node = _item(items_node, number - 1)
        where = f"principle {number}"
        line = _node_line(item_node)
        if not isinstance(item, dict):
            raise ImportFileError(
                source,
                line,
                f"{where} must be a mapping with keys {', '.join(PRINCIPLE_FIELDS)}, "
                f"not {_kind(item)}",
            )
        _no_unknown_keys(item, item_node, PRINCIPLE_FIELDS, source, where)
        values: dict[str, str] = {}
        for key in PRINCIPLE_FIELDS:
            if key not in item:
                raise ImportFileError(
                    source,
                    line,
                    f"{where} has no '{key}'; every principle needs {', '.join(PRINCIPLE_FIELDS)}",
                )
            value = item[key]
            if not isinstance(value, str):
                raise ImportFileError(
                    source,
                    _line(item_node, key),
                    f"{where}: '{key}' must be text, not {_kind(value)} (quote it)",
                )
            if not value.strip():
                raise ImportFileError(source, _line(item_node, key), f"{where}: '{key}' is empty")
            values[key] = " ".join(value.split()) if key == "id" else value.strip()
        pid = values["id"]
        if len(pid) > _MAX_ID or any(c in pid for c in ":\n"):
            raise ImportFileError(
                source,
                _line(item_node, "id"),
                f"{where}: id {pid!r} must be at most {_MAX_ID} "
                "characters with no ':' (it is recorded with each verdict)",
            )
        if pid in seen:
            raise ImportFileError(
                source,
                _line(item_node, "id"),
                f"{where}: id {pid!r} is already used by "
                f"principle {seen[pid]}; give each principle its own id",
            )
        seen[pid] = number
        principles.append(Principle(**values))
    return Constitution(
        name=" ".join(str(name).split()),
        principles=tuple(principles),
        description=str(description).strip(),
        source=source,
    )


# -- where things are in the file -------------------------------------------------------------
def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {dict: "a mapping", list: "a list", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def _node_line(node: Any) -> int:
    return int(node.start_mark.line) + 1 if node is not None else 1


def _child(node: Any, key: str) -> Any:
    """The value node of ``key`` in a mapping node (None if absent)."""
    for key_node, value_node in getattr(node, "value", None) or []:
        if getattr(key_node, "value", None) == key:
            return value_node
    return None


def _line(node: Any, key: str) -> int:
    child = _child(node, key)
    return _node_line(child if child is not None else node)


def _item(node: Any, index: int) -> Any:
    values = getattr(node, "value", None)
    if isinstance(values, list) and index < len(values):
        return values[index]
    return node


def _no_unknown_keys(
    data: dict[str, Any], node: Any, known: tuple[str, ...], source: str, where: str
) -> None:
    for key in data:
        if key not in known:
            raise ImportFileError(
                source,
                _node_line(_key_node(node, key)),
                f"{where} has an unknown key {key!r}; the keys are {', '.join(known)}",
            )


def _key_node(node: Any, key: Any) -> Any:
    for key_node, _value in getattr(node, "value", None) or []:
        if getattr(key_node, "value", None) == str(key):
            return key_node
    return node
