"""The streaming JSONL readers: both formats of each kind, and FILE:LINE errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.io import (
    count_lines,
    hh_messages,
    iter_pairs,
    iter_rankings,
    iter_ratings,
    split_hh_dialogue,
)
from tests.conftest import shared_data


def write(path: Path, *lines: object) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


def test_ratings_in_both_formats(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.jsonl",
        {"text": "hello", "rating": 0.5, "prompt": "greet", "input": {"who": "you"}, "id": 7},
        "",
        {"image_id": "001.jpg", "caption": "부산 바다", "rate": -1},
        {"text": "bye", "rating": 1, "author": "ann"},
    )
    first, diary, last = iter_ratings(path)
    assert (first.text, first.rating, first.prompt, first.input, first.id, first.line) == (
        "hello",
        0.5,
        "greet",
        {"who": "you"},
        "7",
        1,
    )
    assert (diary.text, diary.rating, diary.input, diary.line) == (
        "부산 바다",
        -1.0,
        {"image_id": "001.jpg"},
        3,
    )
    assert (last.author, last.prompt, last.input) == ("ann", None, {})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ({"text": "x"}, 'needs "text" and "rating"'),
        ({"text": "x", "rating": "good"}, '"rating" must be a finite number'),
        ({"text": "x", "rating": True}, '"rating" must be a finite number'),
        ('{"text": "x", "rating": NaN}', '"rating" must be a finite number'),
        ({"text": "", "rating": 1}, '"text" is empty'),
        ({"text": "x", "rating": 1, "input": [1]}, '"input" must be a JSON object'),
        ({"text": "x", "rating": 1, "prompt": 3}, '"prompt" must be a string'),
        ({"text": "x", "rating": 1, "id": True}, '"id" must be a string or an integer'),
        ({"text": "x", "rating": 1, "author": ""}, '"author" must be a non-empty string'),
        ({"caption": "x"}, '"rate" must be a finite number, but it is missing'),
    ],
)
def test_a_bad_rating_line_names_file_line_and_problem(
    tmp_path: Path, line: object, message: str
) -> None:
    path = write(tmp_path / "bad.jsonl", {"text": "fine", "rating": 0}, "", line)
    with pytest.raises(ImportFileError) as info:
        list(iter_ratings(path))
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        list(iter_ratings(tmp_path / "absent.jsonl"))
    with pytest.raises(InvalidInputError, match="is a folder"):
        list(iter_pairs(tmp_path))


def test_pairs_with_a_prompt_and_hh_dialogues(tmp_path: Path) -> None:
    dialogue = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me"
    path = write(
        tmp_path / "p.jsonl",
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 2},
        {"chosen": dialogue + "\n\nAssistant: Sure.", "rejected": dialogue + "\n\nAssistant: No."},
        {"chosen": dialogue + "\n\nAssistant: ", "rejected": dialogue + "\n\nAssistant: Ok"},
        {
            "chosen": dialogue + "\n\nAssistant: One.\n\nAssistant: Two.",
            "rejected": dialogue + "\n\nAssistant: Other.",
        },
    )
    plain, hh, empty, two_turns = iter_pairs(path)
    assert (plain.prompt, plain.chosen, plain.rejected, plain.margin) == ("Q", "good", "bad", 2.0)
    assert (hh.prompt, hh.chosen, hh.rejected, hh.margin) == (
        dialogue + "\n\nAssistant:",
        "Sure.",
        "No.",
        None,
    )
    assert (empty.chosen, empty.rejected) == ("", "Ok")
    assert two_turns.prompt == dialogue + "\n\nAssistant:"
    assert two_turns.chosen == "One.\n\nAssistant: Two."


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": "Q", "chosen": "same", "rejected": "same"}, "the same text"),
        ({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: b"}, "shared dialogue"),
        ({"prompt": "Q", "chosen": 1, "rejected": "x"}, '"chosen" must be a string'),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, '"prompt" is empty'),
        ({"prompt": "Q", "chosen": "a", "rejected": "b", "margin": "big"}, '"margin"'),
    ],
)
def test_a_bad_pair_line(tmp_path: Path, line: object, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", line)
    with pytest.raises(ImportFileError, match=message) as info:
        list(iter_pairs(path))
    assert info.value.line == 1


def test_split_hh_dialogue_cuts_after_the_last_shared_assistant_cue() -> None:
    prompt, chosen, rejected = split_hh_dialogue(
        "\n\nHuman: q\n\nAssistant: yes", "\n\nHuman: q\n\nAssistant: no"
    )
    assert (prompt, chosen, rejected) == ("\n\nHuman: q\n\nAssistant:", "yes", "no")
    with pytest.raises(ValueError, match="shared dialogue"):
        split_hh_dialogue("Human: q", "Human: r")


def test_the_shared_hh_file() -> None:
    pairs = list(iter_pairs(shared_data("hh-harmless-train.jsonl")))
    assert len(pairs) == 1500
    assert all(
        p.prompt.startswith("\n\nHuman:") and p.prompt.endswith("\n\nAssistant:") for p in pairs
    )
    assert all(p.chosen != p.rejected for p in pairs)
    assert sorted(p.line for p in pairs if p.chosen == "") == [1160, 1204]
    assert any("\n\nAssistant:" in p.chosen for p in pairs)  # a reply spanning two turns


def test_hh_messages() -> None:
    dialogue = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant:"
    assert hh_messages(dialogue) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "help me"},
    ]
    assert hh_messages("Write a diary") == [{"role": "user", "content": "Write a diary"}]
    assert hh_messages("preface\n\nHuman: x") == [
        {"role": "user", "content": "preface\n\nHuman: x"}
    ]


def test_rankings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "k.jsonl",
        {"prompt": "Q", "responses": ["a", "b", "c"], "ranking": [2, 1, 3]},
        {"prompt": "Q", "responses": ["a", "a"], "ranking": [1, 2]},
    )
    readings = iter_rankings(path)
    first = next(readings)
    assert (first.responses, first.ranking) == (("a", "b", "c"), (2, 1, 3))
    with pytest.raises(ImportFileError, match="same text twice") as info:
        next(readings)
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": "Q", "responses": ["a"], "ranking": [1]}, "at least two responses"),
        ({"prompt": "Q", "responses": ["a", ""], "ranking": [1, 2]}, "non-empty strings"),
        ({"prompt": "Q", "responses": ["a", "b"], "ranking": [1]}, "one rank"),
        ({"prompt": "Q", "responses": ["a", "b"], "ranking": [0, 1]}, "one rank"),
        ({"prompt": "Q", "responses": ["a", "b"], "ranking": [1, True]}, "one rank"),
    ],
)
def test_a_bad_ranking_line(tmp_path: Path, line: object, message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        list(iter_rankings(write(tmp_path / "bad.jsonl", line)))


def test_count_lines(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1\n2\n3")
    (tmp_path / "b").write_bytes(b"1\n2\n")
    (tmp_path / "c").write_bytes(b"")
    assert [count_lines(tmp_path / n) for n in "abc"] == [3, 2, 0]
