"""Distillation: label outputs with an expensive reward model, train a cheap one on its labels.

The teacher (an :class:`~prefloop.reward.judge.LLMJudge`, a fine-tuned transformer, …) labels
texts nobody rated; the student (a rating regressor on embeddings, a Bradley–Terry model)
learns those labels and then scores new text locally, fast and free. The report says how close
the student gets, on items held out from its training,

* to the teacher (agreement: MSE and Spearman's ρ for ratings, pair accuracy for pairs), and
* to people, where human labels exist — next to the teacher's own agreement with people on the
  same items, which bounds what the student can be expected to reach.

Items the teacher could not label (a judge call that failed: NaN) are left out of everything
and counted, never turned into a 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.io.readers import iter_json_lines
from prefloop.reward._data import Array, PairData, RatingData
from prefloop.reward._loaders import load_pair_data, load_rating_data
from prefloop.reward._manifest import read_model_info, to_jsonable
from prefloop.reward._model import ProgressCallback, RewardModel, load_reward_model

__all__ = [
    "Agreement",
    "DistillConfig",
    "DistillReport",
    "distill_from_files",
    "distill_pairs",
    "distill_ratings",
]

UNIT_SCALE = (0.0, 1.0)


@dataclass(frozen=True)
class DistillConfig:
    """Settings of a distillation run."""

    test_fraction: float = 0.25
    """Share of the teacher-labeled items held out from the student to measure agreement."""
    seed: int = 0
    """Picks the held-out items."""
    refit_on_all: bool = True
    """After measuring, fit the student again on every teacher-labeled item (what you keep)."""

    def check(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise InvalidInputError(
                f"test_fraction={self.test_fraction}: use a share in (0, 1), e.g. 0.25"
            )


@dataclass(frozen=True)
class Agreement:
    """How well one set of scores matches another on ``n`` items.

    For ratings: ``mse``/``mae`` (None when the two are on different scales) and Spearman's ρ.
    For pairs: ``accuracy``, the share of pairs ordered the same way.
    """

    n: int
    mse: float | None = None
    mae: float | None = None
    spearman: float | None = None
    accuracy: float | None = None

    @classmethod
    def of_ratings(cls, predicted: Array, target: Array, *, same_scale: bool) -> Agreement:
        n = len(target)
        if n == 0:
            return cls(n=0)
        rho = float(spearmanr(predicted, target).statistic) if n > 2 else math.nan
        return cls(
            n=n,
            mse=float(np.mean((predicted - target) ** 2)) if same_scale else None,
            mae=float(np.mean(np.abs(predicted - target))) if same_scale else None,
            spearman=None if math.isnan(rho) else rho,  # undefined when one side is constant
        )

    def to_json(self) -> dict[str, Any]:
        rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        return dict(to_jsonable(rounded))


@dataclass(frozen=True)
class DistillReport:
    """The outcome of one distillation (see the module docstring)."""

    kind: str  # "rating" or "pairwise": what the student learned
    teacher: str
    student: str
    items: int
    """Items (texts or pairs) given to the teacher."""
    teacher_failed: int
    """Items the teacher gave no label (excluded, not scored 0)."""
    teacher_ties: int
    """Pairs the teacher could not order (excluded; pairwise only)."""
    train_items: int
    test_items: int
    student_vs_teacher: Agreement
    student_vs_people: Agreement | None
    teacher_vs_people: Agreement | None
    teacher_seconds: float
    student_seconds: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("student_vs_teacher", "student_vs_people", "teacher_vs_people"):
            value = getattr(self, key)
            out[key] = None if value is None else value.to_json()
        out["teacher_seconds"] = round(self.teacher_seconds, 2)
        out["student_seconds"] = round(self.student_seconds, 2)
        return dict(to_jsonable(out))


def _split(n: int, config: DistillConfig) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(config.seed).permutation(n)
    n_test = max(1, round(config.test_fraction * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _check_teacher(teacher: RewardModel) -> None:
    if not teacher.is_fitted:
        raise InvalidInputError(
            f"the teacher ({teacher.name}) is not fitted; fit or load it before distilling"
        )


def _teacher_labels(
    teacher: RewardModel,
    texts: list[str],
    prompts: list[str | None],
    progress: ProgressCallback | None,
) -> Array:
    """Rating teachers label on their scale; pairwise teachers with σ(r) in [0, 1]."""
    from prefloop.reward.judge import LLMJudge

    if isinstance(teacher, LLMJudge):  # slow: report progress after each round of calls
        return teacher.score_with_progress(texts, prompts, progress)
    if teacher.kind == "rating":
        return teacher.score(texts, prompts)
    return teacher.score_unit(texts, prompts)


def distill_ratings(
    teacher: RewardModel,
    student: RewardModel,
    texts: Sequence[str],
    prompts: Sequence[str | None] | None = None,
    *,
    people: Sequence[float] | Array | None = None,
    config: DistillConfig | None = None,
    progress: ProgressCallback | None = None,
) -> DistillReport:
    """Label ``texts`` with ``teacher`` and fit the rating model ``student`` on those labels.

    ``people`` holds human ratings aligned with ``texts`` (NaN where none); they are used only
    to measure, never to train. The student is fitted in place (on every labeled item when
    ``config.refit_on_all``) and the report is also put in ``student.metrics["distillation"]``.
    """
    cfg = config or DistillConfig()
    cfg.check()
    _check_teacher(teacher)
    if student.kind != "rating":
        raise InvalidInputError(
            f"distill_ratings needs a rating student, got {student.name} ({student.kind}); "
            "use distill_pairs for a pairwise student"
        )
    text_list = list(texts)
    prompt_list: list[str | None] = [None] * len(text_list) if prompts is None else list(prompts)
    human = None if people is None else np.asarray(people, dtype=np.float64).reshape(-1)
    if len(prompt_list) != len(text_list) or (human is not None and len(human) != len(text_list)):
        raise InvalidInputError(
            f"{len(text_list)} texts, {len(prompt_list)} prompts and "
            f"{'no' if human is None else len(human)} human ratings: give one of each per text"
        )
    if teacher.kind == "rating":
        assert teacher.train_ is not None
        scale = teacher.train_.scale or UNIT_SCALE
    else:
        scale = UNIT_SCALE

    started = time.perf_counter()
    labels = _teacher_labels(teacher, text_list, prompt_list, progress)
    teacher_seconds = time.perf_counter() - started

    labeled = np.flatnonzero(np.isfinite(labels))
    failed = len(text_list) - labeled.size
    if labeled.size < 8:
        raise InvalidInputError(
            f"the teacher labeled only {labeled.size} of {len(text_list)} texts ({failed} "
            "failed); distillation needs at least 8 labeled texts — check the teacher "
            "(for a judge: its backend and stats)"
        )
    train_pos, test_pos = _split(labeled.size, cfg)
    train, test = labeled[train_pos], labeled[test_pos]

    def data(index: np.ndarray) -> RatingData:
        return RatingData(
            texts=[text_list[i] for i in index],
            ratings=labels[index],
            prompts=[prompt_list[i] for i in index],
            scale=scale,
            source=f"labels of {teacher.name}",
        )

    started = time.perf_counter()
    student.fit(data(train))
    student_seconds = time.perf_counter() - started
    predicted = student.score([text_list[i] for i in test], [prompt_list[i] for i in test])
    vs_teacher = Agreement.of_ratings(predicted, labels[test], same_scale=True)

    vs_people = teacher_people = None
    if human is not None:
        known = np.isfinite(human[test])
        same = teacher.kind == "rating"
        vs_people = Agreement.of_ratings(predicted[known], human[test][known], same_scale=same)
        teacher_people = Agreement.of_ratings(
            labels[test][known], human[test][known], same_scale=same
        )

    report = DistillReport(
        kind="rating",
        teacher=teacher.name,
        student=student.name,
        items=len(text_list),
        teacher_failed=failed,
        teacher_ties=0,
        train_items=int(train.size),
        test_items=int(test.size),
        student_vs_teacher=vs_teacher,
        student_vs_people=vs_people,
        teacher_vs_people=teacher_people,
        teacher_seconds=teacher_seconds,
        student_seconds=student_seconds,
    )
    if cfg.refit_on_all:
        student.fit(data(labeled))
    student.metrics["distillation"] = report.to_json()
    return report


def _teacher_preferences(
    teacher: RewardModel, pairs: PairData, progress: ProgressCallback | None
) -> Array:
    """P(chosen ≻ rejected) by the teacher: its compare mode for a judge, else σ(Δr)."""
    from prefloop.reward.judge import LLMJudge

    if isinstance(teacher, LLMJudge):
        return teacher.compare(pairs.chosen, pairs.rejected, pairs.prompts, progress)
    return teacher.preference_probability(pairs)


def distill_pairs(
    teacher: RewardModel,
    student: RewardModel,
    pairs: PairData,
    *,
    people_labeled: bool = True,
    config: DistillConfig | None = None,
    progress: ProgressCallback | None = None,
) -> DistillReport:
    """Let ``teacher`` order each pair and fit the pairwise ``student`` on its verdicts.

    With ``people_labeled`` (the default), ``pairs.chosen`` is what people preferred, used only
    to measure; otherwise the pairs are just two replies each. Pairs the teacher cannot order
    (a tie, or a failed judge call) are excluded and counted.
    """
    from prefloop.reward.judge import LLMJudge

    cfg = config or DistillConfig()
    cfg.check()
    if not isinstance(teacher, LLMJudge):  # a judge compares pairs without being fitted
        _check_teacher(teacher)
    if student.kind != "pairwise":
        raise InvalidInputError(
            f"distill_pairs needs a pairwise student, got {student.name} ({student.kind}); "
            "use distill_ratings for a rating student"
        )
    started = time.perf_counter()
    p_first = _teacher_preferences(teacher, pairs, progress)
    teacher_seconds = time.perf_counter() - started

    failed = int(np.sum(~np.isfinite(p_first)))
    ties = int(np.sum(p_first == 0.5))
    ordered = np.flatnonzero(np.isfinite(p_first) & (p_first != 0.5))
    if ordered.size < 8:
        raise InvalidInputError(
            f"the teacher ordered only {ordered.size} of {len(pairs)} pairs ({failed} failed, "
            f"{ties} ties); distillation needs at least 8"
        )
    first_wins = p_first > 0.5
    # The teacher's verdicts as pairs: its winner becomes "chosen".
    relabeled = PairData(
        prompts=list(pairs.prompts),
        chosen=[
            c if w else r for c, r, w in zip(pairs.chosen, pairs.rejected, first_wins, strict=True)
        ],
        rejected=[
            r if w else c for c, r, w in zip(pairs.chosen, pairs.rejected, first_wins, strict=True)
        ],
        margins=pairs.margins,
        source=f"verdicts of {teacher.name}",
    )
    train_pos, test_pos = _split(ordered.size, cfg)
    train, test = ordered[train_pos], ordered[test_pos]

    started = time.perf_counter()
    student.fit(relabeled.subset(train))
    student_seconds = time.perf_counter() - started
    test_pairs = pairs.subset(test)
    student_first = (
        student.score(test_pairs.chosen, test_pairs.prompts)
        - student.score(test_pairs.rejected, test_pairs.prompts)
    ) > 0
    teacher_first = first_wins[test]
    vs_teacher = Agreement(
        n=int(test.size), accuracy=float(np.mean(student_first == teacher_first))
    )
    vs_people = teacher_people = None
    if people_labeled:  # people preferred "chosen", i.e. the first of each pair
        vs_people = Agreement(n=int(test.size), accuracy=float(np.mean(student_first)))
        teacher_people = Agreement(n=int(test.size), accuracy=float(np.mean(teacher_first)))

    report = DistillReport(
        kind="pairwise",
        teacher=teacher.name,
        student=student.name,
        items=len(pairs),
        teacher_failed=failed,
        teacher_ties=ties,
        train_items=int(train.size),
        test_items=int(test.size),
        student_vs_teacher=vs_teacher,
        student_vs_people=vs_people,
        teacher_vs_people=teacher_people,
        teacher_seconds=teacher_seconds,
        student_seconds=student_seconds,
    )
    if cfg.refit_on_all:
        student.fit(relabeled.subset(ordered))
    student.metrics["distillation"] = report.to_json()
    return report


def distill_from_files(
    teacher: str | Path | RewardModel,
    data: str | Path,
    student: RewardModel,
    out: str | Path | None = None,
    *,
    config: DistillConfig | None = None,
    progress: ProgressCallback | None = None,
) -> DistillReport:
    """What ``prefloop reward distill`` runs: a saved teacher folder (or a model), a JSONL file,
    a student of the matching kind, and a folder to save the student in.

    For a rating student the file holds texts — ``{"text", "prompt"?}`` lines nobody rated, or
    ratings in any format prefloop reads, whose ratings then only measure agreement with people.
    For a pairwise student it holds pairs or rankings (``chosen`` = what people preferred).
    """
    model = teacher if isinstance(teacher, RewardModel) else _load_teacher(Path(teacher))
    if student.kind == "rating":
        texts, prompts, people = _texts_for_rating(Path(data))
        report = distill_ratings(
            model, student, texts, prompts, people=people, config=config, progress=progress
        )
    else:
        report = distill_pairs(
            model, student, load_pair_data(data), config=config, progress=progress
        )
    if out is not None:
        student.save(out)
    return report


def _texts_for_rating(path: Path) -> tuple[list[str], list[str | None], Array | None]:
    """Texts, prompts and (when the file is rated) people's ratings from a JSONL file."""
    first = next(iter_json_lines(path), None)
    if first is None:
        raise InvalidInputError(f"{path} is empty: give one JSON object per line")
    _, obj = first
    if "text" in obj and "rating" not in obj:
        texts: list[str] = []
        prompts: list[str | None] = []
        for line, obj in iter_json_lines(path):
            text, prompt = obj.get("text"), obj.get("prompt")
            if not isinstance(text, str) or not text.strip():
                raise ImportFileError(str(path), line, '"text" must be a non-empty string')
            if prompt is not None and not isinstance(prompt, str):
                raise ImportFileError(str(path), line, '"prompt" must be a string when given')
            texts.append(text)
            prompts.append(prompt)
        return texts, prompts, None
    ratings = load_rating_data(path)
    return ratings.texts, ratings.prompts, ratings.ratings


def _load_teacher(folder: Path) -> RewardModel:
    read_model_info(folder)  # a clear error for a folder that is not a reward model
    return load_reward_model(folder)
