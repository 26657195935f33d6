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
    (−1 … 1). Its fact rule needs the task's input fields: TRL passes dataset columns through,
    so a column ``inputs`` (one dict of input fields per sample, e.g. ``{"place": "Busan",
    "company": "alone", "mood": "calm"}``) turns it on; without it (or for a sample whose inputs
    are None) the rubric scores everything else (meta text, repetition, length) and skips facts.
``judge``
    the LLM judge (:class:`prefloop.reward.LLMJudge`) on the task's scale: few-shot examples
    from the task's ratings when a store with at least four of them is given, else zero-shot.
    Its backend is the local LLM unless ``backend=`` names another.
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
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from prefloop.errors import InvalidInputError

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

ATOMS: tuple[str, ...] = ("rubric", "judge", "toxicity", "length")
"""The built-in scorers a SPEC may name (besides reward-model folders)."""
FUNCTIONS: tuple[str, ...] = ("min", "mean_std", "sigmoid", "clip")
"""The functions a SPEC may call."""

_ALLOWED = (
    "a SPEC combines rubric, judge, toxicity, length or a reward-model folder with numbers, "
    "+, -, *, parentheses and min(A,B,…), mean_std(A,B,…,k=1), sigmoid(A), clip(A,LO,HI); "
    "e.g. 0.5*rubric+toxicity, models/rm - 0.1*length, min(models/rm1,models/rm2)"
)


class RewardSpecError(InvalidInputError):
    """A reward SPEC that does not parse, or names something that is not a scorer."""


# ---- the formula -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Const:
    value: float


@dataclass(frozen=True)
class _Atom:
    key: str
    """``rubric``, ``judge``, ``toxicity``, ``length``, or a folder as written."""
    folder: bool = False

    @property
    def label(self) -> str:
        """How the SPEC's canonical form writes it (a folder named like an atom is quoted)."""
        plain = re.fullmatch(r"[\w.~/-]+", self.key) and not self.key[0].isdigit()
        needs_quotes = self.folder and (self.key in ATOMS or self.key in FUNCTIONS or not plain)
        return f"'{self.key}'" if needs_quotes else self.key


@dataclass(frozen=True)
class _Neg:
    arg: _Node


@dataclass(frozen=True)
class _Bin:
    op: Literal["+", "-", "*"]
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Call:
    fn: str
    args: tuple[_Node, ...]
    params: tuple[float, ...] = ()
    """``(k,)`` for mean_std, ``(lo, hi)`` for clip."""


_Node = _Const | _Atom | _Neg | _Bin | _Call


def _atoms_of(node: _Node) -> list[_Atom]:
    if isinstance(node, _Atom):
        return [node]
    if isinstance(node, _Const):
        return []
    if isinstance(node, _Neg):
        return _atoms_of(node.arg)
    if isinstance(node, _Bin):
        return _atoms_of(node.left) + _atoms_of(node.right)
    return [a for arg in node.args for a in _atoms_of(arg)]


def _show_number(value: float) -> str:
    return f"{value:g}"


def _show(node: _Node) -> str:
    """The canonical text of a formula: no spaces, only the parentheses it needs."""
    if isinstance(node, _Const):
        return _show_number(node.value)
    if isinstance(node, _Atom):
        return node.label
    if isinstance(node, _Neg):
        inner = _show(node.arg)
        return f"-({inner})" if isinstance(node.arg, _Bin) else f"-{inner}"
    if isinstance(node, _Bin):
        left, right = _show(node.left), _show(node.right)
        if node.op == "*":
            if _is_sum(node.left):
                left = f"({left})"
            if _is_sum(node.right) or isinstance(node.right, _Neg):
                right = f"({right})"
            return f"{left}*{right}"
        if isinstance(node.right, _Neg) or (node.op == "-" and _is_sum(node.right)):
            right = f"({right})"
        return f"{left}{node.op}{right}"
    args = [_show(a) for a in node.args]
    if node.fn == "mean_std":
        args.append(f"k={_show_number(node.params[0])}")
    elif node.fn == "clip":
        args.extend(_show_number(v) for v in node.params)
    return f"{node.fn}({','.join(args)})"


def _is_sum(node: _Node) -> bool:
    return isinstance(node, _Bin) and node.op in "+-"


def _sigmoid(x: Array) -> Array:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)  # σ(x), no overflow


def _evaluate(node: _Node, values: Mapping[str, Array], n: int) -> Array:
    """The formula on a batch: each atom's scores (NaN = no score) → one array; NaN spreads
    through every operation, so a sample one atom could not score has no reward."""
    if isinstance(node, _Const):
        return np.full(n, node.value)
    if isinstance(node, _Atom):
        return values[node.label]
    if isinstance(node, _Neg):
        return -_evaluate(node.arg, values, n)
    if isinstance(node, _Bin):
        left, right = _evaluate(node.left, values, n), _evaluate(node.right, values, n)
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        return left * right
    args = np.stack([_evaluate(a, values, n) for a in node.args])  # (members, n)
    if node.fn == "min":
        return np.asarray(np.min(args, axis=0), dtype=np.float64)  # np.min keeps NaN
    if node.fn == "mean_std":
        (k,) = node.params
        return np.asarray(args.mean(axis=0) - k * args.std(axis=0), dtype=np.float64)
    if node.fn == "sigmoid":
        return _sigmoid(args[0])
    lo, hi = node.params
    return np.asarray(np.clip(args[0], lo, hi), dtype=np.float64)  # NaN stays NaN


# ---- the parser --------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[\w.~/-]+")
_WORD_START = re.compile(r"[\w.~/]")


@dataclass(frozen=True)
class _Token:
    kind: Literal["num", "word", "path", "op", "end"]
    text: str
    pos: int


def _is_folder(text: str) -> bool:
    return Path(text).expanduser().exists()


def _tokens(spec: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while i < len(spec):
        char = spec[i]
        if char.isspace():
            i += 1
            continue
        if char in "+-*(),=":
            out.append(_Token("op", char, i))
            i += 1
            continue
        if char in "'\"":
            end = spec.find(char, i + 1)
            if end < 0:
                raise _error(spec, i, f"the quote {char} is never closed")
            out.append(_Token("path", spec[i + 1 : end], i))
            i = end + 1
            continue
        number = _NUMBER.match(spec, i)
        if number and not _WORD_START.match(spec, number.end()):
            out.append(_Token("num", number.group(0), i))
            i = number.end()
            continue
        word = _WORD.match(spec, i)
        if word is None:
            raise _error(spec, i, f"unexpected character {char!r}")
        text = _resolve_word(spec, i, word.group(0))
        out.append(_Token("word", text, i))
        i += len(text)
    out.append(_Token("end", "", len(spec)))
    return out


def _resolve_word(spec: str, pos: int, word: str) -> str:
    """The name or folder a run of word characters starts with.

    ``-`` is both a folder-name character and the minus sign, so ``rubric-0.1*length`` reads as
    ``rubric``, ``-``, … : the whole word when it is a name or an existing path, else its
    longest part before a ``-`` that is one.
    """
    if word in ATOMS or word in FUNCTIONS or word == "k" or _is_folder(word):
        return word
    cuts = [m.start() for m in re.finditer("-", word)]
    for cut in reversed(cuts):
        head = word[:cut]
        if head and (head in ATOMS or head in FUNCTIONS or _is_folder(head)):
            return head
    hint = (
        " (a '-' inside a word is read as part of a folder name: write A - B with spaces to "
        "subtract)"
        if "-" in word
        else ""
    )
    raise _error(
        spec,
        pos,
        f"{word!r} is neither a reward ({', '.join(ATOMS)}) nor an existing reward-model "
        f"folder{hint}",
    )


def _error(spec: str, pos: int, what: str) -> RewardSpecError:
    return RewardSpecError(f"bad reward SPEC {spec!r} at position {pos + 1}: {what}. {_ALLOWED}")


class _Parser:
    """Recursive descent over the tokens; numbers are folded as it goes."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.tokens = _tokens(spec)
        self.i = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def fail(self, what: str, token: _Token | None = None) -> RewardSpecError:
        token = token or self.token
        shown = "the end" if token.kind == "end" else repr(token.text)
        return _error(self.spec, token.pos, f"{what}, found {shown}")

    def take(self, text: str) -> None:
        if self.token.kind != "op" or self.token.text != text:
            raise self.fail(f"expected {text!r}")
        self.i += 1

    def at(self, text: str) -> bool:
        return self.token.kind == "op" and self.token.text == text

    def parse(self) -> _Node:
        if self.token.kind == "end":
            raise self.fail("the SPEC is empty")
        node = self.expr()
        if self.token.kind != "end":
            raise self.fail("expected an operator (+ - *) or the end")
        if not _atoms_of(node):
            raise _error(self.spec, 0, "it names no scorer, only numbers")
        return node

    def expr(self) -> _Node:
        node = self.term()
        while self.at("+") or self.at("-"):
            op: Literal["+", "-"] = "+" if self.token.text == "+" else "-"
            self.i += 1
            node = _fold(_Bin(op, node, self.term()))
        return node

    def term(self) -> _Node:
        node = self.unary()
        while self.at("*"):
            star = self.token
            self.i += 1
            right = self.unary()
            if not isinstance(node, _Const) and not isinstance(right, _Const):
                raise _error(
                    self.spec,
                    star.pos,
                    "'*' multiplies a reward by a number (a weight such as 0.5*rubric), not by "
                    "another reward",
                )
            node = _fold(_Bin("*", node, right))
        return node

    def unary(self) -> _Node:
        if self.at("-"):
            self.i += 1
            return _fold(_Neg(self.unary()))
        if self.at("+"):
            self.i += 1
            return self.unary()
        return self.primary()

    def primary(self) -> _Node:
        token = self.token
        if token.kind == "num":
            self.i += 1
            value = float(token.text)
            if not math.isfinite(value):
                raise self.fail("a number must be finite", token)
            return _Const(value)
        if token.kind == "path":
            self.i += 1
            if not token.text.strip():
                raise self.fail("an empty folder name", token)
            if not _is_folder(token.text):
                raise self.fail("no such reward-model folder", token)
            return _Atom(token.text, folder=True)
        if self.at("("):
            self.i += 1
            node = self.expr()
            self.take(")")
            return node
        if token.kind == "word":
            self.i += 1
            if token.text in FUNCTIONS:
                return self.call(token)
            if token.text == "k":
                raise self.fail("k= is an argument of mean_std(A,B,…,k=1)", token)
            return _Atom(token.text, folder=token.text not in ATOMS)
        raise self.fail("expected a reward, a number, a function or '('")

    def call(self, name: _Token) -> _Node:
        fn = name.text
        if not self.at("("):
            raise self.fail(f"{fn} is a function: write {fn}(…)")
        self.i += 1
        args: list[_Node] = [self.expr()]
        params: list[float] = []
        while self.at(","):
            self.i += 1
            if fn == "mean_std" and self.token.kind == "word" and self.token.text == "k":
                self.i += 1
                self.take("=")
                params.append(self.constant(self.expr(), "mean_std's k", name))
                break
            args.append(self.expr())
        self.take(")")
        if fn in ("min", "mean_std"):
            if len(args) < 2:
                raise _error(self.spec, name.pos, f"{fn} needs at least two rewards: {fn}(A,B)")
            if fn == "min":
                return _fold(_Call(fn, tuple(args)))
            k = params[0] if params else 1.0
            if k < 0:
                raise _error(
                    self.spec, name.pos, f"mean_std's k must be >= 0 (mean − k·std), got {k:g}"
                )
            return _fold(_Call(fn, tuple(args), (k,)))
        if fn == "sigmoid":
            if len(args) != 1:
                raise _error(self.spec, name.pos, "sigmoid takes one reward: sigmoid(A)")
            return _fold(_Call(fn, tuple(args)))
        if len(args) != 3:
            raise _error(self.spec, name.pos, "clip takes a reward and two numbers: clip(A,-1,1)")
        lo = self.constant(args[1], "clip's low bound", name)
        hi = self.constant(args[2], "clip's high bound", name)
        if not lo < hi:
            raise _error(
                self.spec, name.pos, f"clip's bounds must have low < high, got {lo:g} and {hi:g}"
            )
        return _fold(_Call(fn, (args[0],), (lo, hi)))

    def constant(self, node: _Node, what: str, name: _Token) -> float:
        if not isinstance(node, _Const):
            raise _error(self.spec, name.pos, f"{what} must be a number, not a reward")
        return node.value


def _fold(node: _Node) -> _Node:
    """A node whose arguments are all numbers, as its number."""
    if isinstance(node, _Atom | _Const) or _atoms_of(node):
        return node
    return _Const(float(_evaluate(node, {}, 1)[0]))


def parse_reward_spec(spec: str) -> str:
    """Check ``spec`` and return its canonical form (e.g. ``"0.5*rubric+toxicity"`` for
    ``"0.5 * rubric + toxicity"``); raise :class:`RewardSpecError` naming the bad token.
    Folders are checked to exist, not loaded."""
    return _show(_Parser(_check_spec_text(spec)).parse())


def _check_spec_text(spec: Any) -> str:
    if not isinstance(spec, str):
        raise RewardSpecError(f"a reward SPEC is a string, got {type(spec).__name__}. {_ALLOWED}")
    return spec


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
            )
    if task is None or task == DIARY.name:
        return _TaskView(
            DIARY.name, DEFAULT_SCALE, DIARY.rubric, DIARY.description, DIARY.input_fields
        )
    return _TaskView(task, DEFAULT_SCALE, "", "", None)


class _Scorer(ABC):
    """One atom: scores a whole batch at once; NaN where it has no score."""

    kind: str

    @abstractmethod
    def score(
        self, prompts: list[str], texts: list[str], inputs: list[dict[str, Any] | None]
    ) -> tuple[Array, str | None]:
        """``(scores, why)``: scores of shape (n,), NaN where none; ``why`` the first reason
        a sample got none (None when every sample was scored)."""


class _RubricAtom(_Scorer):
    kind = "rubric"

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
    if store is not None:
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
    if isinstance(model, LLMJudge) and backend is not None and not isinstance(backend, str):
        model.use_backend(backend)
    return _ModelAtom(model, f"{info.kind} reward model ({info.model_class})")


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

    def __init__(self, formula: _Node, scorers: Mapping[str, _Scorer]) -> None:
        self.name = _show(formula)
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
        inputs = _inputs_column(columns, n)
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
        rewards = _evaluate(self._formula, values, n) if n else np.zeros(0)
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
    formula = _Parser(_check_spec_text(spec)).parse()
    view = _task_view(task, store)
    scorers: dict[str, _Scorer] = {}
    for atom in _atoms_of(formula):
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
