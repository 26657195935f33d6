"""Tasks, arms and generations (store/repo.py) on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from prefloop.errors import ConflictError, InvalidInputError, NotFoundError
from prefloop.store import DEFAULT_SCALE, Store
from prefloop.store.repo import (
    active_arms,
    add_generation,
    create_arm,
    get_arm,
    get_generation,
    get_or_create_task,
    get_task,
    set_labels,
    validate_scale,
)


def test_tasks_are_created_once_and_found_by_name(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "diary", input_fields=["place", "mood"], rubric="be nice")
        again = get_or_create_task(s, "diary", rubric="ignored: the task exists")
        assert again.id == task.id and again.rubric == "be nice"
        assert task.scale == list(DEFAULT_SCALE) and task.input_fields == ["place", "mood"]
    with store.session(readonly=True) as s:
        assert get_task(s, "diary").id == task.id


def test_a_missing_task_lists_the_known_ones(store: Store) -> None:
    with store.session(readonly=True) as s, pytest.raises(NotFoundError, match="no tasks yet"):
        get_task(s, "diary")
    with store.session() as s:
        get_or_create_task(s, "b")
        get_or_create_task(s, "a")
    with store.session(readonly=True) as s, pytest.raises(NotFoundError, match="known tasks: a, b"):
        get_task(s, "diary")


@pytest.mark.parametrize("name", ["", "   "])
def test_a_task_needs_a_name(store: Store, name: str) -> None:
    with store.session() as s, pytest.raises(InvalidInputError, match="non-empty name"):
        get_or_create_task(s, name)


def test_validate_scale() -> None:
    assert validate_scale([1, 2, 3]) == [1.0, 2.0, 3.0]
    with pytest.raises(InvalidInputError, match="at least two levels"):
        validate_scale([1])
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        validate_scale([1, 3, 2])
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        validate_scale([1, 1, 2])


def test_arms(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        v1 = create_arm(s, task, "v1", template="Write about {place}", labels=["production"])
        v2 = create_arm(s, task, "v2", template="Write warmly about {place}", parent=v1)
        model = create_arm(s, task, "tuned", model_ref="smollm2@adapter-1")
        assert (v1.kind, model.kind, v2.parent_id, v2.labels) == (
            "prompt",
            "model",
            v1.id,
            ["candidate"],
        )
        with pytest.raises(InvalidInputError, match="not both"):
            create_arm(s, task, "x", template="t", model_ref="m")
        with pytest.raises(InvalidInputError, match="not neither"):
            create_arm(s, task, "x")
        with pytest.raises(ConflictError, match="already has an arm named 'v1'"):
            create_arm(s, task, "v1", template="changed")
        with pytest.raises(InvalidInputError, match="non-empty"):
            create_arm(s, task, "y", template="t", labels=[""])
        assert get_arm(s, task, "v2").id == v2.id
        assert get_arm(s, task, v1.id).id == v1.id
        assert get_arm(s, task, str(model.id)).id == model.id
        set_labels(v1, ["retired", "retired"])
        assert v1.labels == ["retired"] and v1.retired
        s.flush()
        assert [a.name for a in active_arms(s, task)] == ["v2", "tuned"]
        other = get_or_create_task(s, "other")
        with pytest.raises(NotFoundError, match="has no arm"):
            get_arm(s, other, v1.id)


def test_an_arm_named_with_digits_is_found_by_name(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        arm = create_arm(s, task, "2024", template="t")
        assert get_arm(s, task, "2024").id == arm.id


def test_generations(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        other = get_or_create_task(s, "other")
        ok = add_generation(s, task, output="text", input={"place": "Busan"})
        failed = add_generation(s, task, status="failed", error="rate limited")
        assert ok.id.startswith("gen_") and ok.reward is None and failed.output is None
        with pytest.raises(InvalidInputError, match="needs an error"):
            add_generation(s, task, status="failed")
        with pytest.raises(InvalidInputError, match="needs an output"):
            add_generation(s, task)
        with pytest.raises(InvalidInputError, match="'ok' or 'failed'"):
            add_generation(s, task, status="pending", output="x")
        assert get_generation(s, ok.id).input == {"place": "Busan"}
        assert get_generation(s, ok.id, task=task).id == ok.id
        with pytest.raises(NotFoundError, match="in task 'other'"):
            get_generation(s, ok.id, task=other)
        with pytest.raises(NotFoundError, match="gen_nope"):
            get_generation(s, "gen_nope")
