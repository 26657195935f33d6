"""Reward functions: any prefloop scorer, or a formula over several, as one batched callable.

A :class:`RewardFunction` is ``f(prompts, completions, **columns) -> list[float | None]``: the
signature of TRL's reward functions (``GRPOTrainer``, ``RLOOTrainer``), also what prefloop's own
PPO and ``train eval`` call. Build one from a SPEC with :func:`reward_function`::

    SPEC    := expr
    expr    := term (("+" | "-") term)*
    term    := unary ("*" unary)*          one side of "*" must be a number
    unary   := "-" unary | primary
    primary := NUMBER | atom | "(" expr ")"
             | "min(" expr ("," expr)+ ")"
             | "mean_std(" expr ("," expr)+ ["," "k=" NUMBER] ")"     mean − k·std, k=1
             | "sigmoid(" expr ")" | "clip(" expr "," NUMBER "," NUMBER ")"
    atom    := "rubric" | "judge" | "toxicity" | "length" | FOLDER | "'" FOLDER "'"

The atoms:

``rubric``
    the demo's rubric scorer (:class:`prefloop.demo.RubricScorer`), on the task's scale
    (−1 … 1). Its fact rule checks the task's input fields (the diary's place, company and
    mood, or a store task's own fields), so it needs their values: TRL passes dataset columns
    through, and a column ``inputs`` (one dict of input fields per sample, e.g. ``{"place":
    "Busan", "company": "alone", "mood": "calm"}``) turns it on; without it (or for a sample
    whose inputs are None) the rubric scores the rest (meta text, repetition, length) only.
``judge``
    the LLM judge (:class:`prefloop.reward.LLMJudge`) on the task's rubric and scale: one
    example per level from the task's ratings when a store holds at least four of them (on two
    levels or more), else zero-shot. Its backend is the local LLM unless ``backend=`` names
    another.
``toxicity``
    minus the packaged toxic-comment classifier's P(toxic) of the completion, in [−1, 0]: 0 for
    a clean reply, so adding it to another reward only ever takes away.
``length``
    the completion's length in words / 100 (pays for length: the reward to show hacking with).
``FOLDER``
    a saved prefloop reward model (``prefloop reward fit``, ``prefloop train reward``; rating,
    pairwise, lm-scalar or an LLM judge folder): its raw score (a rating on the scale, or a
    Bradley–Terry logit; ``sigmoid(...)`` maps a logit to [0, 1]).

A sample that an atom cannot score (a judge that got no answer, a non-finite score) gets
``None`` from every formula it enters, never 0; an atom failing on a whole batch (a judge server
that is down) gives ``None`` for every sample. TRL turns ``None`` into NaN and leaves the sample
out of its baseline and update; what the caller does with an all-None batch is the caller's
choice. :attr:`RewardFunction.last_stats` counts failures per atom for logging.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from prefloop.errors import InvalidInputError
from prefloop.train._reward_spec import (
    ATOMS,
    FUNCTIONS,
    Node,
    RewardSpecError,
    atoms_of,
    evaluate,
    parse,
    parse_reward_spec,
    show,
)

if TYPE_CHECKING:
    from prefloop.llm import ChatBackend
    from prefloop.reward import RewardModel
    from prefloop.store import Store

__all__ = [
    "ATOMS",
    "FUNCTIONS",
    "AtomStats",
    "RewardFunction",
    "RewardSpecError",
    "RewardStats",
    "completion_text",
    "parse_reward_spec",
    "prompt_text",
    "reward_function",
]

Array = NDArray[np.float64]


# ---- prompts and completions -------------------------------------------------------------------
def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return "" if content is None else str(content)


def _messages(value: Any, what: str, index: int) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and "content" in m for m in value
    ):
        raise InvalidInputError(
            f"{what} {index + 1} is a {type(value).__name__}: give a string or a list of chat "
            'messages ({"role": ..., "content": ...})'
        )
    return value


def prompt_text(prompt: str | list[dict[str, Any]], index: int = 0) -> str:
    """A prompt as the text scorers read: a string as it is; chat messages as the one user
    message's text (after any system text), or, for a conversation of several turns, as an HH
    dialogue (``\\n\\nHuman: … \\n\\nAssistant: … \\n\\nAssistant:``) that the lm-scalar reward
    model turns back into the same turns."""
    if isinstance(prompt, str):
        return prompt
    messages = _messages(prompt, "prompt", index)
    system = [_content_text(m["content"]) for m in messages if m.get("role") == "system"]
    turns = [m for m in messages if m.get("role") != "system"]
    head = "\n\n".join(s for s in system if s)
    if len(turns) == 1 and turns[0].get("role", "user") == "user":
        body = _content_text(turns[0]["content"])
        return f"{head}\n\n{body}" if head else body
    parts = []
    for n, message in enumerate(turns):
        speaker = "Assistant" if message.get("role") == "assistant" else "Human"
        text = _content_text(message["content"])
        if n == 0 and head:
            text = f"{head}\n\n{text}"
        parts.append(f"\n\n{speaker}: {text}")
    return "".join(parts) + "\n\nAssistant:"


def completion_text(completion: str | list[dict[str, Any]], index: int = 0) -> str:
    """A completion's text: a string as it is; chat messages (TRL's conversational form) as the
    text of their assistant messages (of every message when none says ``assistant``)."""
    if isinstance(completion, str):
        return completion
    messages = _messages(completion, "completion", index)
    said = [m for m in messages if m.get("role") == "assistant"] or messages
    return "".join(_content_text(m["content"]) for m in said)


def _inputs_column(columns: Mapping[str, Any], n: int) -> list[dict[str, Any] | None]:
    raw = columns.get("inputs")
    if raw is None:
        return [None] * n
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or len(raw) != n:
        raise InvalidInputError(
            f"the inputs column must hold one dict of input fields per completion ({n}), got "
            f"{type(raw).__name__}" + (f" of length {len(raw)}" if isinstance(raw, list) else "")
        )
    out: list[dict[str, Any] | None] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):  # stored as JSON text
            try:
                item = json.loads(item)
            except json.JSONDecodeError:
                raise InvalidInputError(
                    f"inputs {i + 1} is text that is not a JSON object: {item[:60]!r}"
                ) from None
        if item is not None and not isinstance(item, Mapping):
            raise InvalidInputError(
                f"inputs {i + 1} is a {type(item).__name__}; give a dict of input fields or None"
            )
        out.append(None if item is None else dict(item))
    return out


# ---- the scorers behind the atoms --------------------------------------------------------------
@dataclass(frozen=True)
class _TaskView:
    """What the atoms need to know about the task."""

    name: str
    scale: tuple[float, ...]
    rubric: str
    description: str
    input_fields: tuple[str, ...] | None
    """The fields the rubric's fact rule checks (None: every field of a sample's inputs)."""
    in_store: bool = False
    """Read from the store's task (which may hold ratings for the judge's examples)."""


def _task_view(task: str | None, store: Store | None) -> _TaskView:
    from prefloop.demo import DIARY
    from prefloop.store.models import DEFAULT_SCALE

    if store is not None and task is not None:
        from prefloop.store.repo import get_task

        with store.session(readonly=True) as session:
            row = get_task(session, task)
            return _TaskView(
                name=row.name,
                scale=tuple(float(v) for v in row.scale),
                rubric=row.rubric or "",
                description=row.description or "",
                input_fields=tuple(str(f) for f in row.input_fields) or None,
                in_store=True,
            )
    if task is None or task == DIARY.name:
        return _TaskView(
            DIARY.name, DEFAULT_SCALE, DIARY.rubric, DIARY.description, DIARY.input_fields
        )
    return _TaskView(task, DEFAULT_SCALE, "", "", None)


class _Scorer(ABC):
    """One atom: scores a whole batch at once; NaN where it has no score."""

    kind: str
    reads_inputs = False
    """Whether it reads the ``inputs`` column (the rubric's facts)."""

    @abstractmethod
    def score(
        self, prompts: list[str], texts: list[str], inputs: list[dict[str, Any] | None]
    ) -> tuple[Array, str | None]:
        """``(scores, why)``: scores of shape (n,), NaN where none; ``why`` the first reason
        a sample got none (None when every sample was scored)."""


class _RubricAtom(_Scorer):
    kind = "rubric"
    reads_inputs = True

    def __init__(self, view: _TaskView) -> None:
        from prefloop.demo import DIARY, RubricScorer

        self.scorer = RubricScorer(scale=view.scale)
        self.fields = view.input_fields
        self.vocabulary = DIARY.values

    def facts(self, inputs: dict[str, Any] | None) -> dict[str, list[str]]:
        """The words that show a text used each input: the diary's cue words for its values
        (``with friends`` → ``friend``), the value itself otherwise."""
        if not inputs:
            return {}
        fields = self.fields if self.fields is not None else tuple(inputs)
        out: dict[str, list[str]] = {}
        for name in fields:
            value = inputs.get(name)
            if isinstance(value, str) and value.strip():
                out[name] = list(self.vocabulary.get(name, {}).get(value, (value,)))
        return out

    def score(
        self, prompts: list[str], texts: list[str], inputs: list[dict[str, Any] | None]
    ) -> tuple[Array, str | None]:
        values = [
            self.scorer.score(t, self.facts(i)).value for t, i in zip(texts, inputs, strict=True)
        ]
        return np.asarray(values, dtype=np.float64), None


class _LengthAtom(_Scorer):
    kind = "length"

    def score(
        self, prompts: list[str], texts: list[str], inputs: list[dict[str, Any] | None]
    ) -> tuple[Array, str | None]:
        return np.asarray([len(t.split()) / 100.0 for t in texts], dtype=np.float64), None


class _ToxicityAtom(_Scorer):
    kind = "toxicity"

    def __init__(self) -> None:
        from prefloop.reward._toxicity import load_toxicity_classifier

        self.classifier = load_toxicity_classifier()  # loads now: a missing package fails early

    def score(
        self, prompts: list[str], texts: list[str], inputs: list[dict[str, Any] | None]
    ) -> tuple[Array, str | None]:
        return -self.classifier.predict(texts)[:, 0], None  # column 0: P(toxic)


class _ModelAtom(_Scorer):
    """A reward model's raw score; an LLM failure (a judge's server down) is no score."""

    def __init__(self, model: RewardModel, kind: str) -> None:
        self.model = model
        self.kind = kind

    def score(
        self, prompts: list[str], texts: list[str], inputs: list[dict[str, Any] | None]
    ) -> tuple[Array, str | None]:
        from prefloop.llm import LLMError

        try:
            scores = np.asarray(self.model.score(texts, list(prompts)), dtype=np.float64)
        except LLMError as exc:
            return np.full(len(texts), np.nan), f"{type(exc).__name__}: {exc}"
        failures = getattr(self.model, "failures_", None)  # an LLM judge says why
        why = failures[0].reason if failures else None
        return scores, why


def _judge(
    view: _TaskView, store: Store | None, backend: ChatBackend | str | None, seed: int
) -> RewardModel:
    from prefloop.reward import JudgeConfig, LLMJudge, TrainSummary, rating_data_from_store

    named = backend if isinstance(backend, str) else "local"
    what = f"texts written for the task {view.name!r}"
    if view.description.strip():
        what += f" ({view.description.strip().rstrip('.')})"
    config = JudgeConfig(rubric=view.rubric, task=what, seed=seed, backend=named)
    judge = LLMJudge(config, backend=None if isinstance(backend, str) else backend)
    _check_remote_backend(judge)
    if store is not None and view.in_store:
        data = rating_data_from_store(store, view.name)
        try:
            data.check_trainable()
        except InvalidInputError:
            pass  # too few ratings to show examples: zero-shot below
        else:
            return judge.fit(data)
    # Zero-shot: nothing to learn, the judge only needs the scale.
    judge.scale_ = view.scale
    judge.examples_ = []
    judge.train_ = TrainSummary(n=0, fingerprint="", source="zero-shot", scale=view.scale)
    return judge


def _model_atom(key: str, backend: ChatBackend | str | None) -> _ModelAtom:
    from prefloop.reward import IncompatibleModelError, LLMJudge, load_reward_model, read_model_info

    folder = Path(key).expanduser()
    if not folder.exists():
        raise RewardSpecError(
            f"reward-model folder {key!r} does not exist; give the folder of a saved reward "
            f"model (prefloop reward fit / prefloop train reward) or one of {', '.join(ATOMS)}"
        )
    trained = folder / "prefloop-train.json"
    if trained.exists() and not (folder / "prefloop-reward.json").exists():
        try:
            method = json.loads(trained.read_text(encoding="utf-8")).get("method", "?")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            method = "?"
        raise RewardSpecError(
            f"{key} holds a model trained by `prefloop train {method}` (a policy), not a reward "
            "model; give a reward-model folder (`prefloop train reward`, `prefloop reward fit`)"
        )
    try:
        info = read_model_info(folder)
        model = load_reward_model(folder)
    except IncompatibleModelError as exc:
        raise RewardSpecError(f"reward {key!r}: {exc}") from exc
    if isinstance(model, LLMJudge):
        if backend is not None and not isinstance(backend, str):
            model.use_backend(backend)
        _check_remote_backend(model)
    return _ModelAtom(model, f"{info.kind} reward model ({info.model_class})")


def _check_remote_backend(judge: Any) -> None:
    """Make a judge's remote backend now, so that missing settings (PREFLOOP_LLM_*) fail before
    training starts; the local model loads on first use (it takes half a minute)."""
    if judge.config.backend != "local":
        judge.backend  # noqa: B018 - the property makes and keeps the backend


# ---- the reward function -----------------------------------------------------------------------
@dataclass(frozen=True)
class AtomStats:
    """One atom on the last batch."""

    kind: str
    """What the atom is: ``rubric``, ``judge``, ``rating reward model (sklearn-rating)``, …"""
    n_failed: int
    """Samples it could not score."""
    mean: float | None
    """Mean of the scores it gave (None when it gave none)."""
    error: str | None = None
    """Why the first failed sample failed."""


@dataclass(frozen=True)
class RewardStats:
    """The last batch a :class:`RewardFunction` scored."""

    n: int
    n_failed: int
    """Samples with no reward (None)."""
    mean: float | None
    """Mean reward over the scored samples."""
    seconds: float
    atoms: dict[str, AtomStats] = field(default_factory=dict)

    @property
    def failed_fraction(self) -> float:
        return self.n_failed / self.n if self.n else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["failed_fraction"] = self.failed_fraction
        return out


def _mean(values: Array) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


class RewardFunction:
    """A SPEC's formula over its scorers, called as TRL calls reward functions.

    Make one with :func:`reward_function`. ``name`` (also ``__name__``, which TRL logs rewards
    under) is the SPEC's canonical form; :attr:`last_stats` describes the last batch.
    """

    def __init__(self, formula: Node, scorers: Mapping[str, _Scorer]) -> None:
        self.name = show(formula)
        self.__name__ = self.name
        self._formula = formula
        self._scorers = dict(scorers)
        self.last_stats: RewardStats | None = None

    @property
    def atoms(self) -> tuple[str, ...]:
        """The atoms it scores with, each once (``rubric``, a folder, …)."""
        return tuple(self._scorers)

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., "atoms": {atom: what it is}}`` (JSON-able, for run records)."""
        return {"name": self.name, "atoms": {k: s.kind for k, s in self._scorers.items()}}

    def __repr__(self) -> str:
        return f"RewardFunction({self.name!r})"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        """One reward per completion, None where a scorer could not score it.

        ``prompts`` and ``completions`` are strings or lists of chat messages. ``columns`` are
        the extra columns TRL passes (``inputs`` is read, by the rubric; ``log_metric``, when
        callable, gets each atom's mean and failed fraction; the rest is ignored).
        """
        started = time.perf_counter()
        if isinstance(prompts, str) or isinstance(completions, str):
            raise InvalidInputError("give lists of prompts and completions, not one string")
        if len(prompts) != len(completions):
            raise InvalidInputError(
                f"{len(prompts)} prompts but {len(completions)} completions; give one prompt "
                "per completion (repeat a prompt for each of its completions)"
            )
        n = len(completions)
        prompt_texts = [prompt_text(p, i) for i, p in enumerate(prompts)]
        texts = [completion_text(c, i) for i, c in enumerate(completions)]
        reads = any(s.reads_inputs for s in self._scorers.values())
        inputs: list[dict[str, Any] | None] = _inputs_column(columns, n) if reads else [None] * n
        values: dict[str, Array] = {}
        atoms: dict[str, AtomStats] = {}
        for key, scorer in self._scorers.items():
            if n == 0:
                scores, why = np.zeros(0), None
            else:
                scores, why = scorer.score(prompt_texts, texts, inputs)
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if scores.shape != (n,):
                raise RuntimeError(f"reward atom {key} gave {scores.shape[0]} scores for {n}")
            scores = np.where(np.isfinite(scores), scores, np.nan)  # ±inf is no score either
            values[key] = scores
            failed = int(np.isnan(scores).sum())
            if failed and why is None:
                why = "a score that is not a finite number"
            atoms[key] = AtomStats(scorer.kind, failed, _mean(scores), why if failed else None)
        rewards = evaluate(self._formula, values, n) if n else np.zeros(0)
        rewards = np.where(np.isfinite(rewards), rewards, np.nan)
        out: list[float | None] = [None if math.isnan(v) else float(v) for v in rewards]
        self.last_stats = RewardStats(
            n=n,
            n_failed=sum(v is None for v in out),
            mean=_mean(rewards),
            seconds=time.perf_counter() - started,
            atoms=atoms,
        )
        log_metric = columns.get("log_metric")
        if callable(log_metric) and n:
            self._log(log_metric, self.last_stats)
        return out

    def _log(self, log_metric: Callable[[str, float], None], stats: RewardStats) -> None:
        log_metric(f"reward/{self.name}/failed_fraction", stats.failed_fraction)
        if len(stats.atoms) > 1:
            for key, atom in stats.atoms.items():
                if atom.mean is not None:
                    log_metric(f"reward/{self.name}/{key}/mean", atom.mean)
                log_metric(f"reward/{self.name}/{key}/failed_fraction", atom.n_failed / stats.n)


def reward_function(
    spec: str,
    *,
    task: str | None = None,
    store: Store | None = None,
    backend: ChatBackend | str | None = None,
    seed: int = 0,
) -> RewardFunction:
    """The reward function a SPEC describes (grammar and atoms: see the module's docstring).

    ``task`` names the task whose scale, rubric and input fields the ``rubric`` and ``judge``
    atoms use (the demo's diary task when None); with a ``store``, they are read from the
    store's task, and the judge takes its few-shot examples from the task's ratings.
    ``backend`` is the judge's LLM: a :class:`prefloop.llm.ChatBackend` (used by the ``judge``
    atom and by saved LLM-judge folders), or a name, ``"local"`` (default) or ``"openai"``, made
    from the environment on the judge's first call (a saved judge folder keeps the backend it
    names). ``seed`` seeds the judge's examples and sampling.

    Every scorer is loaded here (the judge's local LLM excepted), so a missing package or a bad
    folder fails now, not in the middle of training. A bad SPEC raises
    :class:`RewardSpecError` naming the bad token and what is allowed.
    """
    formula = parse(spec)
    view = _task_view(task, store)
    scorers: dict[str, _Scorer] = {}
    for atom in atoms_of(formula):
        if atom.label in scorers:
            continue
        if atom.folder:
            scorers[atom.label] = _model_atom(atom.key, backend)
        elif atom.key == "rubric":
            scorers[atom.label] = _RubricAtom(view)
        elif atom.key == "length":
            scorers[atom.label] = _LengthAtom()
        elif atom.key == "toxicity":
            scorers[atom.label] = _ToxicityAtom()
        else:
            scorers[atom.label] = _ModelAtom(_judge(view, store, backend, seed), "judge")
    return RewardFunction(formula, scorers)
