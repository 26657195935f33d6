"""Training data, saved folders and the model registry of names (prefloop.reward)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.reward import (
    MANIFEST_NAME,
    IncompatibleModelError,
    PairData,
    RatingData,
    load_pair_data,
    load_rating_data,
    load_reward_model,
    read_model_info,
)
from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel
from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel
from tests.reward.conftest import synthetic_pairs, synthetic_ratings, write_jsonl


def ridge() -> SklearnRatingModel:
    return SklearnRatingModel(RatingModelConfig(model="ridge:stats"))


# ---- data ------------------------------------------------------------------------------------
def test_rating_file_in_both_formats(tmp_path: Path) -> None:
    plain = write_jsonl(
        tmp_path / "a.jsonl",
        [{"text": "one", "rating": 1, "prompt": "p"}, {"text": "two", "rating": -0.5}],
    )
    diary = write_jsonl(tmp_path / "b.jsonl", [{"image_id": "1.jpg", "caption": "one", "rate": 1}])
    a = load_rating_data(plain)
    assert a.texts == ["one", "two"] and a.prompts == ["p", None]
    assert a.ratings.tolist() == [1.0, -0.5] and a.scale == (-1.0, -0.5, 0.0, 0.5, 1.0)
    assert load_rating_data(diary).texts == ["one"]


def test_rated_texts_know_their_input(tmp_path: Path) -> None:
    """What each text was drafted from: the input fields (as one key), else the prompt."""
    rows = [
        {"text": "one", "rating": 1, "input": {"place": "Busan", "mood": "happy"}},
        {"text": "two", "rating": 0, "input": {"mood": "happy", "place": "Busan"}, "prompt": "p"},
        {"text": "three", "rating": 0, "prompt": "p"},
        {"text": "four", "rating": -1},
    ]
    data = load_rating_data(write_jsonl(tmp_path / "a.jsonl", rows))
    assert data.inputs[0] == data.inputs[1] == '{"mood": "happy", "place": "Busan"}'
    assert data.inputs[2:] == ["p", None]
    assert data.subset([3, 0]).inputs == [None, data.inputs[0]]
    diary = write_jsonl(
        tmp_path / "b.jsonl",
        [{"image_id": "7.jpg", "caption": "x", "rate": 1}, {"caption": "y", "rate": 0}],
    )
    assert load_rating_data(diary).inputs == ['{"image_id": "7.jpg"}', None]
    assert data.fingerprint() == replace(data, inputs=[]).fingerprint()  # not part of it
    with pytest.raises(InvalidInputError, match="3 input keys for 4 ratings"):
        replace(data, inputs=["a", "b", "c"])


def test_scale_inferred_or_given(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl", [{"text": "a", "rating": 3}, {"text": "b", "rating": 7}]
    )
    assert load_rating_data(path).scale == (3.0, 7.0)
    assert load_rating_data(path, scale=(1, 10)).scale == (1.0, 10.0)
    with pytest.raises(InvalidInputError, match=r"rating 7 of item 2 .* outside the scale"):
        load_rating_data(path, scale=(1, 5))


def test_pairs_and_rankings_files(tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    ranks = write_jsonl(
        tmp_path / "k.jsonl",
        [{"prompt": "q", "responses": ["x", "y", "z"], "ranking": [2, 1, 3]}],
    )
    p = load_pair_data(pairs)
    assert (p.prompts, p.chosen, p.rejected, p.margins.tolist()) == (["q"], ["a"], ["b"], [1.0])
    k = load_pair_data(ranks)
    assert sorted(zip(k.chosen, k.rejected, k.margins.tolist(), strict=True)) == [
        ("x", "z", 1.0),
        ("y", "x", 1.0),
        ("y", "z", 2.0),
    ]


def test_wrong_file_for_the_kind(tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    ratings = write_jsonl(tmp_path / "r.jsonl", [{"text": "a", "rating": 1}])
    with pytest.raises(InvalidInputError, match=r"holds pairs, not ratings.*--kind pairwise"):
        load_rating_data(pairs)
    with pytest.raises(InvalidInputError, match=r"holds ratings.*--kind rating"):
        load_pair_data(ratings)
    odd = write_jsonl(tmp_path / "o.jsonl", [{"foo": 1}])
    with pytest.raises(ImportFileError, match=r"o.jsonl:1: cannot tell what this file holds"):
        load_rating_data(odd)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", "utf-8")
    with pytest.raises(InvalidInputError, match=r"empty.jsonl is empty"):
        load_rating_data(empty)
    with pytest.raises(InvalidInputError, match=r"no ratings in x"):
        RatingData(texts=[], ratings=np.zeros(0), prompts=[], source="x").check_trainable()
    with pytest.raises(InvalidInputError, match=r"no preference pairs"):
        ridge_pairs = BradleyTerryModel(BradleyTerryConfig(features="stats"))
        ridge_pairs.fit(PairData(prompts=[], chosen=[], rejected=[]))


def test_one_rating_level_is_an_error() -> None:
    data = RatingData(texts=list("abcdef"), ratings=np.full(6, 0.5), prompts=[None] * 6)
    with pytest.raises(InvalidInputError, match=r"every rating is 0.5.*at least two different"):
        ridge().fit(data)


def test_identical_chosen_and_rejected_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"pair 2 .*same text"):
        PairData(prompts=["q", "q"], chosen=["a", "b"], rejected=["c", "b"], source="mem")
    same = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    with pytest.raises(ImportFileError, match=r"s.jsonl:1: chosen and rejected are the same"):
        load_pair_data(same)


def test_fingerprint_depends_on_content_only() -> None:
    a = RatingData(texts=["x", "y"], ratings=np.array([0.0, 1.0]), prompts=[None, None])
    b = RatingData(texts=["x", "y"], ratings=np.array([0.0, 1.0]), prompts=[None, None], source="f")
    c = RatingData(texts=["x", "y"], ratings=np.array([0.0, 0.5]), prompts=[None, None])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert len(a.fingerprint()) == 64


def test_fit_needs_the_right_kind_of_data() -> None:
    pairs = PairData.from_records([])
    with pytest.raises(InvalidInputError, match=r"trains on RatingData, not PairData"):
        ridge().fit(pairs)  # type: ignore[arg-type]


# ---- saved folders -------------------------------------------------------------------------
@pytest.fixture
def rating_data() -> RatingData:
    from prefloop.io.records import RatingRecord

    rows = synthetic_ratings(40)
    return RatingData.from_records(RatingRecord(text=r["text"], rating=r["rating"]) for r in rows)


def test_manifest_records_what_the_model_is(tmp_path: Path, rating_data: RatingData) -> None:
    model = ridge().fit(rating_data)
    model.metrics = {"cv": {"mse": 0.1}}
    folder = model.save(tmp_path / "m")
    manifest = json.loads((folder / MANIFEST_NAME).read_text("utf-8"))
    assert manifest["kind"] == "rating" and manifest["class"] == "sklearn-rating"
    assert manifest["config"]["model"] == "ridge:stats"
    assert manifest["data_fingerprint"] == rating_data.fingerprint()
    assert manifest["metrics"] == {"cv": {"mse": 0.1}}
    assert {"python", "prefloop", "numpy", "scikit-learn"} <= set(manifest["versions"])
    assert manifest["train"]["mean"] == pytest.approx(float(rating_data.ratings.mean()))
    assert manifest["created_at"]
    assert (folder / "model.joblib").exists()


def test_save_load_round_trip_in_a_new_process(tmp_path: Path, rating_data: RatingData) -> None:
    model = ridge().fit(rating_data)
    folder = model.save(tmp_path / "m")
    texts = rating_data.texts[:5]
    expected = model.score(texts).tolist()
    code = (
        "import json, sys\n"
        "from prefloop.reward import load_reward_model\n"
        "m = load_reward_model(sys.argv[1])\n"
        "print(json.dumps([m.kind, m.score(json.loads(sys.argv[2])).tolist()]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder), json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kind, scores = json.loads(result.stdout)
    assert kind == "rating"
    assert scores == pytest.approx(expected, abs=1e-9)


def test_load_refuses_another_kind(tmp_path: Path, rating_data: RatingData) -> None:
    folder = ridge().fit(rating_data).save(tmp_path / "rating-model")
    with pytest.raises(
        IncompatibleModelError, match=r"rating-model holds a rating reward model.*pairwise"
    ):
        load_reward_model(folder, kind="pairwise")
    with pytest.raises(IncompatibleModelError, match=r"expected 'bradley-terry'"):
        BradleyTerryModel.load(folder)


def test_load_refuses_another_format_version(tmp_path: Path, rating_data: RatingData) -> None:
    folder = ridge().fit(rating_data).save(tmp_path / "m")
    manifest = json.loads((folder / MANIFEST_NAME).read_text("utf-8"))
    manifest["format"] = 99
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(
        IncompatibleModelError, match=r"saved in reward-model format 99.*reads format 1"
    ):
        load_reward_model(folder)


def test_load_refuses_unknown_class_and_settings(tmp_path: Path, rating_data: RatingData) -> None:
    folder = ridge().fit(rating_data).save(tmp_path / "m")
    manifest = json.loads((folder / MANIFEST_NAME).read_text("utf-8"))
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest, "class": "quantum"}), "utf-8")
    with pytest.raises(IncompatibleModelError, match=r"class 'quantum'"):
        load_reward_model(folder)
    manifest["config"]["future_knob"] = 1
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(IncompatibleModelError, match=r"future_knob"):
        load_reward_model(folder)


def test_load_of_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(IncompatibleModelError, match=r"not a prefloop reward model"):
        load_reward_model(tmp_path)
    with pytest.raises(IncompatibleModelError, match=r"is not a folder"):
        read_model_info(tmp_path / "missing")


def test_a_failed_save_leaves_nothing(tmp_path: Path, rating_data: RatingData) -> None:
    model = ridge().fit(rating_data)

    def broken(folder: Path) -> None:
        (folder / "model.joblib").write_text("half", "utf-8")
        raise OSError("disk full")

    model._save_files = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match=r"disk full"):
        model.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_a_model_folder_but_not_other_folders(
    tmp_path: Path, rating_data: RatingData
) -> None:
    first = ridge().fit(rating_data).save(tmp_path / "m")
    second = ridge().fit(rating_data.subset(range(30))).save(tmp_path / "m")
    assert first == second
    assert read_model_info(second).train is not None
    assert read_model_info(second).train.n == 30  # type: ignore[union-attr]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", "utf-8")
    with pytest.raises(InvalidInputError, match=r"not a prefloop reward-model folder"):
        ridge().fit(rating_data).save(mine)
    assert (mine / "notes.txt").read_text("utf-8") == "keep me"


def test_unfitted_model_cannot_score_or_save(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"not fitted"):
        ridge().score(["x"])
    with pytest.raises(InvalidInputError, match=r"unfitted"):
        ridge().save(tmp_path / "m")


def test_score_checks_its_arguments(rating_data: RatingData) -> None:
    model = ridge().fit(rating_data)
    with pytest.raises(InvalidInputError, match=r"list of texts, not one string"):
        model.score("one text")
    with pytest.raises(InvalidInputError, match=r"2 texts but 1 prompts"):
        model.score(["a", "b"], ["p"])
    assert model.score([]).shape == (0,)


def test_score_unit_maps_the_scale_and_squashes_logits(rating_data: RatingData) -> None:
    model = ridge().fit(rating_data)
    raw = model.score(rating_data.texts)
    assert np.allclose(model.score_unit(rating_data.texts), (raw + 1.0) / 2.0)
    bt = BradleyTerryModel(BradleyTerryConfig(features="stats", c_grid=(1.0,)))
    from prefloop.io.records import PairRecord

    rows = synthetic_pairs(20)
    bt.fit(PairData.from_records(PairRecord(**r) for r in rows))
    texts = [r["chosen"] for r in rows]
    assert np.allclose(bt.score_unit(texts), 1 / (1 + np.exp(-bt.score(texts))))


def test_save_with_overwrite_false_keeps_the_old_model(
    tmp_path: Path, rating_data: RatingData
) -> None:
    ridge().fit(rating_data).save(tmp_path / "m")
    with pytest.raises(InvalidInputError, match=r"already holds a reward model"):
        ridge().fit(rating_data.subset(range(30))).save(tmp_path / "m", overwrite=False)
    assert read_model_info(tmp_path / "m").train.n == len(rating_data)  # type: ignore[union-attr]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ridge().fit(rating_data).save(empty, overwrite=False) == empty
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "m"]


def test_to_unit_maps_raw_rewards_without_scoring_again(rating_data: RatingData) -> None:
    model = ridge().fit(rating_data)
    raw = model.score(rating_data.texts)
    assert np.array_equal(model.to_unit(raw), model.score_unit(rating_data.texts))
    unit = model.to_unit([-1.0, 0.0, 1.0, 3.0, float("nan")])
    assert unit[:4].tolist() == [0.0, 0.5, 1.0, 1.0] and np.isnan(unit[4])  # no score stays none
    with pytest.raises(InvalidInputError, match=r"not fitted"):
        ridge().to_unit([0.0])


def test_heavy_models_are_importable_from_the_package_without_loading_torch() -> None:
    """`from prefloop.reward import LLMJudge` works, and importing the package loads neither
    torch nor transformers (they load when a fine-tuned model trains or loads)."""
    code = (
        "import sys\n"
        "import prefloop.reward as r\n"
        "from prefloop.reward import LLMJudge, JudgeConfig, FinetunedRewardModel, "
        "FinetuneConfig, DistillConfig, distill_ratings, distill_pairs, distill_from_files\n"
        "import prefloop.reward.judge as j, prefloop.reward.finetune as f\n"
        "assert LLMJudge is j.LLMJudge and FinetunedRewardModel is f.FinetunedRewardModel\n"
        "assert set(r.__all__) <= set(dir(r))\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'openai') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
