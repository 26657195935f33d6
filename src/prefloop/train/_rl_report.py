"""The report of an online run (:func:`prefloop.train.online.run_online`): ``steps.jsonl`` (one
record per step), ``curves.png`` (reward and held-out reward, KL and β, length and the share of
replies that ended, entropy and toxicity rate) and ``report.html`` with the figure embedded and
the verdict on reward hacking in words. Written into the run's staging folder, which is renamed
into place only when everything is written."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefloop.train.config import OnlineConfig
    from prefloop.train.online import OnlineResult, StepRecord

__all__ = ["write_report"]


def _series(history: list[StepRecord], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for record in history:
        value = getattr(record, key)
        if value is not None:
            steps.append(record.step)
            values.append(float(value))
    return steps, values


def _plot(history: list[StepRecord], path: Path, config: OnlineConfig) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.0, 7.5))
    FigureCanvasAgg(figure)
    panels = [
        ("Reward", [("reward", "training reward", "#1f77b4"), ("heldout", "held-out", "#d62728")]),
        ("KL to the reference", [("kl", "KL", "#2ca02c"), ("beta", "β", "#9467bd")]),
        ("Replies", [("length", "mean tokens", "#ff7f0e")]),
        ("Entropy and toxicity", [("entropy", "entropy (nats)", "#8c564b")]),
    ]
    for index, (title, lines) in enumerate(panels, start=1):
        axes = figure.add_subplot(2, 2, index)
        for key, label, color in lines:
            steps, values = _series(history, key)
            if steps:
                target = axes.twinx() if key == "beta" else axes
                target.plot(steps, values, marker="o", markersize=3, label=label, color=color)
                if key == "beta":
                    target.set_ylabel("β")
        if title.startswith("KL"):
            if config.target_kl is not None:
                axes.axhline(config.target_kl, color="grey", linestyle="--", label="target")
            if config.kl_budget is not None:
                axes.axhline(config.kl_budget, color="black", linestyle=":", label="budget")
        if title == "Replies":
            right = axes.twinx()
            steps, ended = _series(history, "ended")
            right.plot(steps, ended, color="#7f7f7f", linestyle="--", label="share ended")
            right.set_ylim(-0.05, 1.05)
            right.set_ylabel("share ended")
        if title.startswith("Entropy"):
            right = axes.twinx()
            steps, toxic = _series(history, "toxicity")
            if steps:
                right.plot(steps, toxic, color="#e377c2", linestyle="--", label="toxicity rate")
                right.set_ylim(-0.05, 1.05)
                right.set_ylabel("toxicity rate")
        axes.set_title(title, fontsize=11)
        axes.set_xlabel("step")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(folder: Path, result: OnlineResult, config: OnlineConfig) -> None:
    """Write ``steps.jsonl``, ``curves.png`` and ``report.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "steps.jsonl").open("w", encoding="utf-8") as handle:
        for record in result.history:
            handle.write(json.dumps(record.to_json()) + "\n")
    picture = folder / "curves.png"
    _plot(result.history, picture, config)
    image = base64.b64encode(picture.read_bytes()).decode("ascii")
    if result.hacking_flag:
        verdict = (
            "<p class=flag><strong>Signs of reward hacking.</strong></p><ul>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in result.hacking_signs)
            + "</ul>"
        )
    else:
        verdict = (
            "<p>No sign of reward hacking: the training reward did not rise while the held-out "
            "reward fell or the replies ran long.</p>"
        )
    if result.heldout_scorer is None:
        verdict += (
            "<p>No held-out scorer was given, so a reward that rises for the wrong reason can "
            "only show through length; give <code>--heldout SPEC</code>.</p>"
        )
    stops = {
        "max_steps": "the run made all its steps",
        "kl_budget": (
            f"the run stopped: a step's KL exceeded the budget of {config.kl_budget}; the "
            "policy of the last step within it was saved"
        ),
        "interrupted": "the run was interrupted; the last good policy was saved",
    }
    facts = [
        ("method", result.method),
        ("base", result.base),
        ("reward", result.reward),
        ("held-out scorer", result.heldout_scorer),
        ("prompts", result.prompts),
        ("steps", result.steps),
        ("stopped", stops.get(result.stopped, result.stopped)),
        (
            "reward, first → last step",
            f"{_fmt(result.reward_mean_first)} → {_fmt(result.reward_mean_last)}",
        ),
        (
            "held-out, first → last step",
            f"{_fmt(result.heldout_first)} → {_fmt(result.heldout_last)}",
        ),
        ("KL (last), β (last)", f"{_fmt(result.kl_last)}, {_fmt(result.beta_last)}"),
        ("seconds", f"{result.seconds:.0f}"),
    ]
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in facts
    )
    columns = (
        "step",
        "reward",
        "heldout",
        "kl",
        "beta",
        "entropy",
        "length",
        "ended",
        "toxicity",
        "failed",
    )
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(getattr(r, c)))}</td>" for c in columns) + "</tr>"
        for r in result.history
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>prefloop train {html.escape(result.method)}: run report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left}}
.flag{{color:#a00}}img{{max-width:100%}}</style></head><body>
<h1>Online run: {html.escape(result.method)}</h1>
{verdict}
<table>{rows}</table>
<h2>Curves</h2>
<img alt="reward, held-out reward, KL and β, reply length, entropy and toxicity per step"
 src="data:image/png;base64,{image}">
<h2>Steps</h2>
<table><tr>{head}</tr>{body}</table>
</body></html>
"""
    (folder / "report.html").write_text(page, encoding="utf-8")
