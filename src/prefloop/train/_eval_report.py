"""The report of :func:`prefloop.train.evaluate.evaluate_policy`: two PNGs (matplotlib's object
API on the Agg canvas) and one self-contained HTML page with the figures embedded and the
answers side by side (every model text escaped), plus ``eval.json`` with every answer. All are
written in a temporary folder inside the target and renamed into place, so a failure leaves no
half-written file."""

from __future__ import annotations

import base64
import html
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prefloop._files import move_into_place

if TYPE_CHECKING:
    from prefloop.train.evaluate import PolicyEvaluation

__all__ = ["verdict", "write_eval_report"]


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def _plot_rewards(evaluation: PolicyEvaluation, path: Path) -> Path:
    """Reward distributions of both models, and each prompt's pair of rewards."""
    figure = _figure((10.0, 4.2))
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    pairs = [
        (s.trained_reward, s.reference_reward)
        for s in evaluation.samples
        if s.trained_reward is not None and s.reference_reward is not None
    ]
    trained = np.array([p[0] for p in pairs], dtype=np.float64)
    reference = np.array([p[1] for p in pairs], dtype=np.float64)
    bins = np.histogram_bin_edges(np.concatenate([trained, reference]), bins=20)
    left.hist(reference, bins=bins, alpha=0.55, label="reference", color="#7f7f7f")
    left.hist(trained, bins=bins, alpha=0.55, label="trained", color="#1f77b4")
    left.set_xlabel("reward")
    left.set_ylabel("answers")
    left.set_title("Reward distributions", fontsize=11)
    left.legend(fontsize=9)
    right.scatter(reference, trained, s=14, alpha=0.6, color="#1f77b4")
    low = float(min(trained.min(), reference.min()))
    high = float(max(trained.max(), reference.max()))
    right.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    right.set_xlabel("reference's reward")
    right.set_ylabel("trained model's reward")
    title = "Per prompt (above the line: trained wins)"
    right.set_title(title, fontsize=11)
    for axes in (left, right):
        axes.grid(True, alpha=0.3)
    return _save_png(figure, path)


def _plot_lengths(evaluation: PolicyEvaluation, path: Path) -> Path:
    figure = _figure((7.5, 4.0))
    axes = figure.add_subplot()
    trained = [s.trained_tokens for s in evaluation.samples]
    reference = [s.reference_tokens for s in evaluation.samples]
    top = max(max(trained), max(reference), 1)
    # one bar per token count while that stays readable, else 30 bins
    bins = np.arange(-0.5, top + 1.5) if top < 40 else np.linspace(0, top, 31)
    axes.hist(reference, bins=bins, alpha=0.55, label="reference", color="#7f7f7f")
    axes.hist(trained, bins=bins, alpha=0.55, label="trained", color="#1f77b4")
    ratio = "–" if evaluation.length_ratio is None else f"{evaluation.length_ratio:.2f}"
    axes.set_title(f"Answer length (trained / reference = {ratio})", fontsize=11)
    axes.set_xlabel("tokens")
    axes.set_ylabel("answers")
    axes.legend(fontsize=9)
    axes.grid(True, alpha=0.3)
    return _save_png(figure, path)


def _save_png(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    return path


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border-bottom:1px solid #e4e4e4;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.win{background:#eef7ee}td.loss{background:#fbeeee}
.callout{background:#f3f7fc;border-left:4px solid #1f77b4;padding:.6em 1em;margin:1em 0}
.warn{background:#fff6e5;border-left:4px solid #ff9800;padding:.6em 1em;margin:1em 0}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
pre{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;
margin:0}.muted{color:#666;font-size:.9em}
"""


def verdict(ev: PolicyEvaluation) -> str:
    """One sentence on the win rate and whether its interval excludes a coin flip."""
    if ev.win_rate is None or ev.win_rate_interval is None:
        return "No prompt could be scored, so there is no win rate."
    low, high = ev.win_rate_interval
    if low > 0.5:
        said = "better than its reference"
    elif high < 0.5:
        said = "worse than its reference"
    else:
        said = "not clearly different from its reference (the interval includes 0.5)"
    return (
        f"The trained model wins {ev.win_rate:.1%} of {ev.scored} prompts (95% interval "
        f"{low:.1%}–{high:.1%}) by the reward model: {said}."
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "–" if value is None else format(value, fmt)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _html(evaluation: PolicyEvaluation, images: dict[str, Path], shown: int) -> str:
    ev = evaluation
    interval = (
        "–"
        if ev.win_rate_interval is None
        else f"[{ev.win_rate_interval[0]:.3f}, {ev.win_rate_interval[1]:.3f}]"
    )
    rows = [
        ("win rate of the trained model (ties half)", f"{_num(ev.win_rate)}  95% CI {interval}"),
        ("wins / ties / losses", f"{ev.wins} / {ev.ties} / {ev.losses}"),
        (
            "mean reward, trained vs reference",
            f"{_num(ev.mean_reward_trained)} vs {_num(ev.mean_reward_reference)}",
        ),
        (
            "KL(trained ‖ reference) per token: sampled tokens / full distributions",
            f"{ev.kl_per_token:.4f} / {ev.kl_full_per_token:.4f} nats",
        ),
        ("KL per answer", f"{ev.kl_per_answer:.3f} nats"),
        (
            "mean answer tokens, trained vs reference",
            f"{ev.mean_tokens_trained:.1f} vs {ev.mean_tokens_reference:.1f} "
            f"(ratio {_num(ev.length_ratio, '.2f')})",
        ),
    ]
    if ev.toxicity_threshold is not None:
        rows.append(
            (
                f"toxic answers (P(toxic) ≥ {ev.toxicity_threshold:g}), trained vs reference",
                f"{_num(ev.toxicity_trained, '.1%')} vs {_num(ev.toxicity_reference, '.1%')}",
            )
        )
    decoding = (
        "greedy"
        if ev.config.temperature == 0
        else f"sampled at temperature {ev.config.temperature:g}, top-p {ev.config.top_p:g}, "
        f"seed {ev.config.seed}"
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>prefloop train eval: {_e(ev.model)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Trained model <code>{_e(ev.model)}</code> against its reference</h1>",
        f"<p class='muted'>method <code>{_e(ev.method)}</code> · base <code>{_e(ev.base)}</code>"
        f" · reference: {'the base with the adapter disabled' if ev.adapter else 'the base'}"
        f" · scorer <code>{_e(ev.scorer)}</code> · {ev.prompts} prompts · {_e(decoding)}, at "
        f"most {ev.config.max_new_tokens} new tokens · {ev.seconds:.1f} s</p>",
    ]
    parts.append(f"<div class='callout'>{_e(verdict(ev))}</div>")
    if ev.unscored or ev.too_long:
        notes = []
        if ev.unscored:
            notes.append(
                f"{ev.unscored} prompt(s) left out of the win rate: the scorer gave no score"
            )
        if ev.too_long:
            notes.append(f"{ev.too_long} prompt(s) too long for the model's context")
        notes += [f"scorer error: {m}" for m in ev.scorer_errors]
        parts.append("<div class='warn'>" + "<br>".join(_e(n) for n in notes) + "</div>")
    parts.append(
        "<table>"
        + "".join(f"<tr><th>{_e(k)}</th><td class='num'>{_e(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )
    parts.append("<h2>Rewards</h2>" + _img(images["rewards_png"], "reward distributions"))
    parts.append("<h2>Answer lengths</h2>" + _img(images["lengths_png"], "length histogram"))
    parts.append(
        f"<h2>Samples (the first {min(shown, len(ev.samples))} of {len(ev.samples)})</h2>"
        "<table><tr><th>prompt</th><th>trained</th><th>reference</th><th>rewards</th>"
        "<th>KL: sampled / full</th></tr>"
    )
    for s in ev.samples[:shown]:
        css = {1.0: " class='win'", 0.0: " class='loss'"}.get(
            -1.0 if s.outcome is None else s.outcome, ""
        )
        parts.append(
            f"<tr><td><pre>{_e(s.prompt)}</pre></td><td{css}><pre>{_e(s.trained)}</pre></td>"
            f"<td><pre>{_e(s.reference)}</pre></td><td class='num'>"
            f"{_num(s.trained_reward, '+.3f')}<br>{_num(s.reference_reward, '+.3f')}</td>"
            f"<td class='num'>{s.kl:.2f} / {s.kl_full:.2f}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_eval_report(
    evaluation: PolicyEvaluation, folder: str | Path, *, samples_shown: int = 50
) -> dict[str, Path]:
    """Write ``report.html``, ``rewards.png``, ``lengths.png`` and ``eval.json`` (every answer)
    into ``folder``. All are made in a temporary folder beside it and renamed into place, so a
    failure leaves no half-written file. Returns the paths by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".eval-", dir=folder))
    names = {
        "html": "report.html",
        "rewards_png": "rewards.png",
        "lengths_png": "lengths.png",
        "json": "eval.json",
    }
    final = {key: folder / name for key, name in names.items()}
    try:
        images = {
            "rewards_png": _plot_rewards(evaluation, staging / names["rewards_png"]),
            "lengths_png": _plot_lengths(evaluation, staging / names["lengths_png"]),
        }
        (staging / names["html"]).write_text(
            _html(evaluation, images, samples_shown), encoding="utf-8"
        )
        record = evaluation.with_files(final).to_json(samples=True)
        (staging / names["json"]).write_text(
            json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        for key, name in names.items():
            move_into_place(staging / name, final[key])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
