"""Import into a real store and export training data back out, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.feedback import EditEvent, RatingEvent, record_feedback
from prefloop.io import (
    import_pairs,
    import_rankings,
    import_ratings,
    iter_pairs,
    preference_rows,
    rating_rows,
    sft_rows,
    unpaired_rows,
    write_jsonl,
)
from prefloop.store import Feedback, Generation, Store, Task
from prefloop.store.models import Base
from prefloop.store.repo import add_generation, get_or_create_task, get_task
from tests.conftest import shared_data


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join(
            (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def row_counts(store: Store) -> dict[str, int]:
    with store.session(readonly=True) as s:
        return {
            table.name: s.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def export(
    store: Store, name: str, make_rows: Any, path: Path, **options: Any
) -> list[dict[str, Any]]:
    with store.session(readonly=True) as s:
        write_jsonl(path, make_rows(s, get_task(s, name), **options))
    return read(path)


def test_import_the_diary_ratings(store: Store) -> None:
    with store.session() as s:
        result = import_ratings(s, shared_data("memozy-train.jsonl"), "diary")
    assert (result.imported, result.generations, result.feedback, result.created_task) == (
        450,
        450,
        450,
        True,
    )
    with store.session(readonly=True) as s:
        feedback = s.scalars(select(Feedback)).all()
        assert Counter(f.value for f in feedback) == {-1: 33, -0.5: 52, 0: 153, 0.5: 141, 1: 71}
        assert {(f.kind, f.source, f.author) for f in feedback} == {("rating", "labeler", "import")}
        generations = {g.id: g for g in s.scalars(select(Generation))}
        for event in feedback:
            generation = generations[event.generation_id]  # type: ignore[index]
            assert generation.reward == event.value
            assert generation.input["image_id"].endswith(".jpg")
            assert generation.prompt is None and generation.output


def test_a_malformed_line_7_leaves_the_store_unchanged(store: Store, tmp_path: Path) -> None:
    with store.session() as s:
        import_ratings(s, write(tmp_path / "ok.jsonl", [{"text": "first", "rating": 1}]), "diary")
    before = row_counts(store)
    rows: list[Any] = [{"text": f"text {i}", "rating": 0.5} for i in range(12)]
    rows[6] = '{"text": "broken", "rating": }'
    bad = write(tmp_path / "bad.jsonl", rows)
    for task in ("diary", "new-task"):  # an existing task and one the import would create
        with pytest.raises(ImportFileError) as info, store.session() as s:
            import_ratings(s, bad, task)
        assert info.value.line == 7 and f"{bad}:7:" in str(info.value)
        assert row_counts(store) == before


def test_a_rating_off_the_task_scale_fails_with_its_line(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl", [{"text": "a", "rating": 1}, {"text": "b", "rating": 0.7}])
    with pytest.raises(ImportFileError) as info, store.session() as s:
        import_ratings(s, path, "diary")
    assert (
        info.value.line == 2
        and "0.7" in str(info.value)
        and "-1, -0.5, 0, 0.5, 1" in str(info.value)
    )
    with store.session() as s:
        result = import_ratings(
            s,
            write(tmp_path / "s.jsonl", [{"text": "b", "rating": 4}]),
            "stars",
            scale=[1, 2, 3, 4, 5],
        )
        assert result.created_task
        assert get_task(s, "stars").scale == [1, 2, 3, 4, 5]
    with pytest.raises(InvalidInputError, match="already exists with scale"), store.session() as s:
        import_ratings(s, path, "stars", scale=[1, 2, 3])


def test_import_the_hh_pairs_and_export_them_as_preferences(store: Store, tmp_path: Path) -> None:
    source = shared_data("hh-harmless-train.jsonl")
    seen: list[int] = []
    with store.session() as s:
        result = import_pairs(s, source, "harmless", progress=seen.append)
    assert (result.imported, result.generations, result.feedback) == (1500, 3000, 1500)
    assert seen == list(range(1, 1501))
    rows = export(store, "harmless", preference_rows, tmp_path / "out.jsonl")
    assert len(rows) == 1500
    expected = [(p.prompt, p.chosen, p.rejected) for p in iter_pairs(source)]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == expected
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    # the same prompt text gives the same prompt and input to both generations
    with store.session(readonly=True) as s:
        for event, a, b in s.execute(
            select(Feedback, Generation.prompt, Generation.input)
            .join(Generation, Feedback.other_generation_id == Generation.id)
            .limit(20)
        ):
            chosen = s.get(Generation, event.generation_id)
            assert chosen is not None and (chosen.prompt, chosen.input) == (a, b)
    conversational = export(
        store, "harmless", preference_rows, tmp_path / "conv.jsonl", format="conversational"
    )
    first = conversational[0]
    assert first["prompt"][0]["role"] == "user" and first["prompt"][-1]["role"] == "user"
    assert first["chosen"] == [{"role": "assistant", "content": rows[0]["chosen"]}]


def test_ratings_round_trip(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.jsonl",
        [
            {
                "text": "오늘은 맑았다.",
                "rating": 0.5,
                "prompt": "diary",
                "input": {"place": "Busan"},
            },
            {"text": "plain", "rating": -1, "author": "ann"},
            {"image_id": "002.jpg", "caption": "사진", "rate": 1},
        ],
    )
    with store.session() as s:
        import_ratings(s, path, "one", author="bob")
    first = export(store, "one", rating_rows, tmp_path / "one.jsonl")
    with store.session() as s:
        import_ratings(s, tmp_path / "one.jsonl", "two", author="someone-else")
    second = export(store, "two", rating_rows, tmp_path / "two.jsonl")

    def content(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "id"} for r in rows]

    assert content(first) == content(second)
    assert content(first) == [
        {
            "text": "오늘은 맑았다.",
            "rating": 0.5,
            "prompt": "diary",
            "input": {"place": "Busan"},
            "author": "bob",
        },
        {"text": "plain", "rating": -1.0, "author": "ann"},
        {"text": "사진", "rating": 1.0, "input": {"image_id": "002.jpg"}, "author": "bob"},
    ]
    with store.session(readonly=True) as s:
        ids = set(
            s.scalars(select(Generation.id).where(Generation.task_id == get_task(s, "one").id))
        )
    assert {r["id"] for r in first} == ids


def test_the_diary_ratings_round_trip(store: Store, tmp_path: Path) -> None:
    with store.session() as s:
        import_ratings(s, shared_data("memozy-train.jsonl"), "diary")
    first = export(store, "diary", rating_rows, tmp_path / "a.jsonl")
    with store.session() as s:
        import_ratings(s, tmp_path / "a.jsonl", "again")
    second = export(store, "again", rating_rows, tmp_path / "b.jsonl")
    assert len(first) == 450
    assert [{**r, "id": None} for r in first] == [{**r, "id": None} for r in second]


def test_pairs_round_trip_with_margins(store: Store, tmp_path: Path) -> None:
    rows = [
        {"prompt": "Q1", "chosen": "good", "rejected": "bad", "margin": 1.5},
        {"prompt": "Q1", "chosen": "fine", "rejected": "worse"},
        {"prompt": "Q2", "chosen": "", "rejected": "something"},
    ]
    with store.session() as s:
        import_pairs(s, write(tmp_path / "p.jsonl", rows), "one")
    first = export(store, "one", preference_rows, tmp_path / "one.jsonl")
    with store.session() as s:
        import_pairs(s, tmp_path / "one.jsonl", "two")
    second = export(store, "two", preference_rows, tmp_path / "two.jsonl")
    assert first == rows and second == rows


def test_rankings_export_as_pairs(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path / "k.jsonl",
        [
            {"prompt": "Q", "responses": ["a", "b", "c", "d"], "ranking": [2, 1, 4, 3]},
            {"prompt": "R", "responses": ["x", "y", "z"], "ranking": [1, 1, 2]},
        ],
    )
    with store.session() as s:
        result = import_rankings(s, path, "ranked")
    assert (result.generations, result.feedback) == (7, 2)
    rows = export(store, "ranked", preference_rows, tmp_path / "out.jsonl")
    assert len(rows) == 6 + 2  # 4·3/2, and 3·2/2 less the tie
    assert {(r["chosen"], r["rejected"]) for r in rows if r["prompt"] == "R"} == {
        ("x", "z"),
        ("y", "z"),
    }
    assert ("b", "a") in {(r["chosen"], r["rejected"]) for r in rows}


def _rated(store: Store) -> tuple[Task, dict[str, str]]:
    with store.session() as s:
        task = get_or_create_task(s, "mixed")
        ids = {
            text: add_generation(s, task, output=text, input={"n": 1}, prompt="P").id
            for text in ("top", "good", "meh", "bad", "unrated")
        }
        add_generation(s, task, status="failed", error="boom")
        for text, value in (("top", 1), ("good", 0.5), ("meh", 0), ("bad", -0.5)):
            record_feedback(s, task, RatingEvent(generation_id=ids[text], value=value))
        record_feedback(s, task, EditEvent(generation_id=ids["meh"], final_text="meh, but better"))
    return task, ids


def test_sft_keeps_well_rewarded_generations_and_edits(store: Store, tmp_path: Path) -> None:
    _rated(store)
    rows = export(store, "mixed", sft_rows, tmp_path / "sft.jsonl")
    assert [r["completion"] for r in rows] == ["top", "good", "meh, but better"]
    assert rows[0] == {"prompt": "P", "completion": "top"}
    strict = export(
        store, "mixed", sft_rows, tmp_path / "s.jsonl", min_reward=1.0, include_edits=False
    )
    assert [r["completion"] for r in strict] == ["top"]
    messages = export(store, "mixed", sft_rows, tmp_path / "m.jsonl", format="conversational")
    assert messages[0] == {
        "messages": [{"role": "user", "content": "P"}, {"role": "assistant", "content": "top"}]
    }


def test_unpaired_labels_follow_the_reward_sign(store: Store, tmp_path: Path) -> None:
    _rated(store)
    rows = export(store, "mixed", unpaired_rows, tmp_path / "u.jsonl")
    # "meh" was rated 0, and its edit rewrote most of it (similarity 2·3/18): auto-rating
    # -0.5, so its reward is -0.25
    assert [(r["completion"], r["label"]) for r in rows] == [
        ("top", True),
        ("good", True),
        ("meh", False),
        ("bad", False),
    ]


def test_preferences_from_ratings_carry_the_margin(store: Store, tmp_path: Path) -> None:
    _rated(store)
    plain = export(store, "mixed", preference_rows, tmp_path / "p.jsonl")
    assert plain == [{"prompt": "P", "chosen": "meh, but better", "rejected": "meh"}]  # the edit
    rows = export(store, "mixed", preference_rows, tmp_path / "r.jsonl", from_ratings=True)
    margins = {(r["chosen"], r["rejected"]): r.get("margin") for r in rows[1:]}
    assert len(margins) == 4 * 3 // 2
    assert margins[("top", "bad")] == 1.5 and margins[("meh", "bad")] == 0.25


def test_unknown_format_is_refused(store: Store, tmp_path: Path) -> None:
    _rated(store)
    with pytest.raises(InvalidInputError, match="plain, conversational"):
        export(store, "mixed", sft_rows, tmp_path / "x.jsonl", format="chatml")
    assert not (tmp_path / "x.jsonl").exists()


def test_write_jsonl_never_leaves_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def rows() -> Any:
        yield {"a": 1}
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]
    assert write_jsonl(target, [{"k": "한국어"}]) == 1
    assert target.read_text(encoding="utf-8") == '{"k": "한국어"}\n'
    with pytest.raises(InvalidInputError, match="does not exist"):
        write_jsonl(tmp_path / "no" / "such.jsonl", [])
