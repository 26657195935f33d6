"""Constitution files: the packaged default, the loader's errors, the seeded draws."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefloop.cai import (
    Constitution,
    Principle,
    default_constitution,
    default_constitution_text,
    load_constitution,
    parse_constitution,
)
from prefloop.errors import ImportFileError, InvalidInputError

GOOD = """\
name: mine
principles:
  - id: kind
    critique: Is it unkind?
    revision: Make it kind.
    comparison: Which reply is kinder?
  - id: short
    critique: Is it long?
    revision: Make it short.
    comparison: Which reply is shorter?
"""


def test_the_packaged_constitution_loads_with_every_request_filled() -> None:
    constitution = default_constitution()
    assert constitution.name == "prefloop-default"
    assert len(constitution.principles) >= 4
    assert len(set(constitution.ids)) == len(constitution.ids)
    for principle in constitution.principles:
        assert principle.critique.strip() and principle.revision.strip()
        assert principle.comparison.rstrip().endswith("?")
    assert load_constitution(None) == constitution
    assert "principles:" in default_constitution_text()


def test_a_file_loads_into_typed_principles(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD, encoding="utf-8")
    constitution = load_constitution(path)
    assert constitution.name == "mine" and constitution.source == str(path)
    assert constitution.principles[0] == Principle(
        "kind", "Is it unkind?", "Make it kind.", "Which reply is kinder?"
    )
    assert constitution.principle("short").revision == "Make it short."
    with pytest.raises(InvalidInputError, match=r"no principle 'long'.*kind, short"):
        constitution.principle("long")


def test_without_a_name_the_file_name_is_used(tmp_path: Path) -> None:
    path = tmp_path / "house-rules.yaml"
    path.write_text(GOOD.replace("name: mine\n", ""), encoding="utf-8")
    assert load_constitution(path).name == "house-rules"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: x\nprinciples:\n  - id: a\n    critique: [unclosed\n", 5, "not valid YAML"),
        ("name: x\nprinciples:\n  - id: a\n    critique: c: d\n", 4, "not valid YAML"),
        ("principles: []\n", 1, "'principles' is empty"),
        ("principles: just text\n", 1, "'principles' must be a list"),
        ("principles:\n  - just text\n", 2, "principle 1 must be a mapping"),
        (GOOD.replace("    revision: Make it short.\n", ""), 7, "principle 2 has no 'revision'"),
        (GOOD.replace("Is it long?", "42"), 8, "'critique' must be text, not int"),
        (GOOD.replace("Make it kind.", "''"), 5, "'revision' is empty"),
        (GOOD.replace("id: short", "id: kind"), 7, "id 'kind' is already used by principle 1"),
        (GOOD.replace("id: short", "id: 'a:b'"), 7, "no ':'"),
        (GOOD + "    weight: 2\n", 11, "unknown key 'weight'"),
        ("name: x\nrules:\n  - id: a\n", 2, "unknown key 'rules'"),
        ("name: [1]\n" + GOOD.split("\n", 1)[1], 1, "'name' must be text"),
    ],
)
def test_a_bad_file_names_its_line_and_the_problem(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ImportFileError) as caught:
        load_constitution(path)
    assert caught.value.path == str(path)
    assert caught.value.line == line, str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a YAML mapping with a 'principles' list"),
        ("- id: a\n", "a YAML mapping with a 'principles' list"),
        ("name: x\n", "has no 'principles' list"),
    ],
)
def test_a_file_without_principles_says_how_one_looks(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as caught:
        parse_constitution(text, source="c.yaml")
    assert "comparison:" in str(caught.value)  # the example of a principle


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"does not exist.*cai constitution -o"):
        load_constitution(tmp_path / "nope.yaml")


def test_draws_are_seeded_uniform_and_can_be_pinned_to_one_principle() -> None:
    constitution = default_constitution()
    first = [p.id for p in constitution.draw(300, seed=7)]
    assert first == [p.id for p in constitution.draw(300, seed=7)]
    assert first != [p.id for p in constitution.draw(300, seed=8)]
    expected = 300 / len(constitution.principles)
    for pid in constitution.ids:  # each principle near its share (binomial sd ≈ 6.5)
        assert abs(first.count(pid) - expected) < 25, (pid, first.count(pid))
    assert {p.id for p in constitution.draw(10, seed=0, only="honesty")} == {"honesty"}


def test_a_constitution_needs_principles_with_distinct_ids() -> None:
    one = Principle("a", "c", "r", "q?")
    with pytest.raises(InvalidInputError, match="no principles"):
        Constitution("x", ())
    with pytest.raises(InvalidInputError, match="more than once"):
        Constitution("x", (one, one))
