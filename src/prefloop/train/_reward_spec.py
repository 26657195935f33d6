"""The reward SPEC language: tokens, a recursive-descent parser, the formula and its arithmetic.

The grammar and the atoms are documented in :mod:`prefloop.train.rewards`, the public module;
this one knows nothing of the scorers behind the atoms. Numbers fold as the parser goes, so a
formula holds only what depends on the scores.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from prefloop.errors import InvalidInputError

__all__ = [
    "ATOMS",
    "FUNCTIONS",
    "Atom",
    "Node",
    "RewardSpecError",
    "atoms_of",
    "check_spec_text",
    "evaluate",
    "parse",
    "parse_reward_spec",
    "show",
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
class Const:
    value: float


@dataclass(frozen=True)
class Atom:
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
class Neg:
    arg: Node


@dataclass(frozen=True)
class Bin:
    op: Literal["+", "-", "*"]
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Node, ...]
    params: tuple[float, ...] = ()
    """``(k,)`` for mean_std, ``(lo, hi)`` for clip."""


Node = Const | Atom | Neg | Bin | Call


def atoms_of(node: Node) -> list[Atom]:
    if isinstance(node, Atom):
        return [node]
    if isinstance(node, Const):
        return []
    if isinstance(node, Neg):
        return atoms_of(node.arg)
    if isinstance(node, Bin):
        return atoms_of(node.left) + atoms_of(node.right)
    return [a for arg in node.args for a in atoms_of(arg)]


def _show_number(value: float) -> str:
    return f"{value:g}"


def show(node: Node) -> str:
    """The canonical text of a formula: no spaces, only the parentheses it needs."""
    if isinstance(node, Const):
        return _show_number(node.value)
    if isinstance(node, Atom):
        return node.label
    if isinstance(node, Neg):
        inner = show(node.arg)
        return f"-({inner})" if isinstance(node.arg, Bin) else f"-{inner}"
    if isinstance(node, Bin):
        left, right = show(node.left), show(node.right)
        if node.op == "*":
            if _is_sum(node.left):
                left = f"({left})"
            if _is_sum(node.right) or isinstance(node.right, Neg):
                right = f"({right})"
            return f"{left}*{right}"
        if isinstance(node.right, Neg) or (node.op == "-" and _is_sum(node.right)):
            right = f"({right})"
        return f"{left}{node.op}{right}"
    args = [show(a) for a in node.args]
    if node.fn == "mean_std":
        args.append(f"k={_show_number(node.params[0])}")
    elif node.fn == "clip":
        args.extend(_show_number(v) for v in node.params)
    return f"{node.fn}({','.join(args)})"


def _is_sum(node: Node) -> bool:
    return isinstance(node, Bin) and node.op in "+-"


def _sigmoid(x: Array) -> Array:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)  # σ(x), no overflow


def evaluate(node: Node, values: Mapping[str, Array], n: int) -> Array:
    """The formula on a batch: each atom's scores (NaN = no score) → one array; NaN spreads
    through every operation, so a sample one atom could not score has no reward."""
    if isinstance(node, Const):
        return np.full(n, node.value)
    if isinstance(node, Atom):
        return values[node.label]
    if isinstance(node, Neg):
        return -evaluate(node.arg, values, n)
    if isinstance(node, Bin):
        left, right = evaluate(node.left, values, n), evaluate(node.right, values, n)
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        return left * right
    args = np.stack([evaluate(a, values, n) for a in node.args])  # (members, n)
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


class Parser:
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

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise self.fail("the SPEC is empty")
        node = self.expr()
        if self.token.kind != "end":
            raise self.fail("expected an operator (+ - *) or the end")
        if not atoms_of(node):
            raise _error(self.spec, 0, "it names no scorer, only numbers")
        return node

    def expr(self) -> Node:
        node = self.term()
        while self.at("+") or self.at("-"):
            op: Literal["+", "-"] = "+" if self.token.text == "+" else "-"
            self.i += 1
            node = _fold(Bin(op, node, self.term()))
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.at("*"):
            star = self.token
            self.i += 1
            right = self.unary()
            if not isinstance(node, Const) and not isinstance(right, Const):
                raise _error(
                    self.spec,
                    star.pos,
                    "'*' multiplies a reward by a number (a weight such as 0.5*rubric), not by "
                    "another reward",
                )
            node = _fold(Bin("*", node, right))
        return node

    def unary(self) -> Node:
        if self.at("-"):
            self.i += 1
            return _fold(Neg(self.unary()))
        if self.at("+"):
            self.i += 1
            return self.unary()
        return self.primary()

    def primary(self) -> Node:
        token = self.token
        if token.kind == "num":
            self.i += 1
            value = float(token.text)
            if not math.isfinite(value):
                raise self.fail("a number must be finite", token)
            return Const(value)
        if token.kind == "path":
            self.i += 1
            if not token.text.strip():
                raise self.fail("an empty folder name", token)
            if not _is_folder(token.text):
                raise self.fail("no such reward-model folder", token)
            return Atom(token.text, folder=True)
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
            return Atom(token.text, folder=token.text not in ATOMS)
        raise self.fail("expected a reward, a number, a function or '('")

    def call(self, name: _Token) -> Node:
        fn = name.text
        if not self.at("("):
            raise self.fail(f"{fn} is a function: write {fn}(…)")
        self.i += 1
        args: list[Node] = [self.expr()]
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
                return _fold(Call(fn, tuple(args)))
            k = params[0] if params else 1.0
            if k < 0:
                raise _error(
                    self.spec, name.pos, f"mean_std's k must be >= 0 (mean − k·std), got {k:g}"
                )
            return _fold(Call(fn, tuple(args), (k,)))
        if fn == "sigmoid":
            if len(args) != 1:
                raise _error(self.spec, name.pos, "sigmoid takes one reward: sigmoid(A)")
            return _fold(Call(fn, tuple(args)))
        if len(args) != 3:
            raise _error(self.spec, name.pos, "clip takes a reward and two numbers: clip(A,-1,1)")
        lo = self.constant(args[1], "clip's low bound", name)
        hi = self.constant(args[2], "clip's high bound", name)
        if not lo < hi:
            raise _error(
                self.spec, name.pos, f"clip's bounds must have low < high, got {lo:g} and {hi:g}"
            )
        return _fold(Call(fn, (args[0],), (lo, hi)))

    def constant(self, node: Node, what: str, name: _Token) -> float:
        if not isinstance(node, Const):
            raise _error(self.spec, name.pos, f"{what} must be a number, not a reward")
        return node.value


def _fold(node: Node) -> Node:
    """A node whose arguments are all numbers, as its number."""
    if isinstance(node, Atom | Const) or atoms_of(node):
        return node
    return Const(float(evaluate(node, {}, 1)[0]))


def parse_reward_spec(spec: str) -> str:
    """Check ``spec`` and return its canonical form (e.g. ``"0.5*rubric+toxicity"`` for
    ``"0.5 * rubric + toxicity"``); raise :class:`RewardSpecError` naming the bad token.
    Folders are checked to exist, not loaded."""
    return show(Parser(check_spec_text(spec)).parse())


def check_spec_text(spec: Any) -> str:
    if not isinstance(spec, str):
        raise RewardSpecError(f"a reward SPEC is a string, got {type(spec).__name__}. {_ALLOWED}")
    return spec


def parse(spec: Any) -> Node:
    """The formula of ``spec`` (raises :class:`RewardSpecError`)."""
    return Parser(check_spec_text(spec)).parse()
