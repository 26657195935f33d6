"""Reward models in the store's registry, and training data read from the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefloop.errors import NotFoundError
from prefloop.feedback import EditEvent, record_feedback
from prefloop.reward import pair_data_from_store, rating_data_from_store
from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel
from prefloop.reward.registry import list_registered, register_folder, scan_folders
from prefloop.store import Feedback, Store
from prefloop.store.repo import add_generation, create_arm, get_or_create_task
from tests.reward.conftest import synthetic_ratings


def fitted_folder(tmp_path: Path, name: str = "diary-rm") -> Path:
    from prefloop.reward import RatingData

    rows = synthetic_ratings(30)
    data = RatingData(
        texts=[r["text"] for r in rows],
        ratings=np.array([r["rating"] for r in rows]),
        prompts=[None] * 30,
    )
    model = SklearnRatingModel(RatingModelConfig(model="ridge:stats")).fit(data)
    model.metrics = {"cv": {"mse": 0.12, "baseline": {"mse": 0.5}}}
    return model.save(tmp_path / name)


def test_register_and_list_versions(store: Store, tmp_path: Path) -> None:
    with store.session() as s:
        get_or_create_task(s, "diary")
    folder = fitted_folder(tmp_path)
    first = register_folder(store, folder, task="diary")
    second = register_folder(store, folder, name="diary-rm")
    assert (first["name"], first["version"], second["version"]) == ("diary-rm", 1, 2)
    assert first["kind"] == "rating" and first["class"] == "sklearn-rating"
    assert len(first["data_fingerprint"]) == 64
    rows = list_registered(store)
    assert [r["version"] for r in rows] == [2, 1]
    assert rows[1]["task"] == "diary" and rows[1]["metrics"]["cv"]["mse"] == 0.12
    assert [r["version"] for r in list_registered(store, task="diary")] == [1]
    with pytest.raises(NotFoundError, match="no task named 'nope'"):
        register_folder(store, folder, task="nope")


def test_scan_folders_finds_saved_models(tmp_path: Path) -> None:
    fitted_folder(tmp_path / "models", "a")
    fitted_folder(tmp_path / "models" / "nested", "b")
    (tmp_path / "models" / "broken").mkdir()
    (tmp_path / "models" / "broken" / "prefloop-reward.json").write_text("{", "utf-8")
    rows = scan_folders(tmp_path / "models")
    names = {r.get("name") for r in rows if "error" not in r}
    assert names == {"a", "b"}
    for row in (r for r in rows if "error" not in r):
        assert {"python", "prefloop", "numpy", "scikit-learn"} <= set(row["versions"])
        assert len(row["data_fingerprint"]) == 64 and row["metrics"]["cv"]["mse"] == 0.12
    assert any("not valid JSON" in r.get("error", "") for r in rows)


def _task_with_feedback(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "diary", input_fields=["place"])
        arm = create_arm(s, task, "v1", template="Write about {place}")
        gens = [
            add_generation(s, task, arm_id=arm.id, input={"place": "Busan"}, output=f"text {i}")
            for i in range(4)
        ]
        gens[0].reward, gens[1].reward, gens[2].reward = 1.0, -0.5, 0.0
        failed = add_generation(s, task, arm_id=arm.id, status="failed", error="timeout")
        failed.reward = None
        s.add_all(
            [
                Feedback(
                    task_id=task.id,
                    kind="pairwise",
                    generation_id=gens[0].id,
                    other_generation_id=gens[1].id,
                    value=1.0,
                ),
                Feedback(
                    task_id=task.id,
                    kind="pairwise",
                    generation_id=gens[2].id,
                    other_generation_id=gens[3].id,
                    value=-1.0,
                ),
                Feedback(
                    task_id=task.id,
                    kind="pairwise",
                    generation_id=gens[0].id,
                    other_generation_id=gens[3].id,
                    value=0.0,
                ),
                Feedback(
                    task_id=task.id,
                    kind="ranking",
                    payload={
                        "generation_ids": [gens[1].id, gens[2].id, gens[3].id],
                        "ranks": [2, 1, 2],
                    },
                ),
            ]
        )
        # an edit through the one recording path: it stores the final text as a generation
        # and the final-over-draft pair (with source ``auto``)
        record_feedback(s, task, EditEvent(generation_id=gens[2].id, final_text="text 2, better"))


def test_training_data_from_the_store(store: Store) -> None:
    _task_with_feedback(store)
    ratings = rating_data_from_store(store, "diary")
    assert sorted(ratings.texts) == ["text 0", "text 1", "text 2"]
    assert sorted(ratings.ratings.tolist()) == [-0.5, 0.0, 1.0]
    assert ratings.prompts == ['{"place": "Busan"}'] * 3  # one renderer: prompt, else input
    assert ratings.inputs == ['{"place": "Busan"}'] * 3  # drafts of one input
    assert ratings.scale == (-1.0, -0.5, 0.0, 0.5, 1.0)
    pairs = pair_data_from_store(store, "diary")
    got = sorted(zip(pairs.chosen, pairs.rejected, strict=True))
    assert got == [
        ("text 0", "text 1"),  # pairwise, a wins
        ("text 2", "text 1"),  # ranking 1 over 2
        ("text 2", "text 3"),  # ranking 1 over 2 (and the 0 tie gives nothing)
        ("text 2, better", "text 2"),  # edit
        ("text 3", "text 2"),  # pairwise, b wins
    ]
    with pytest.raises(NotFoundError):
        rating_data_from_store(store, "other")
