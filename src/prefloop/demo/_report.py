"""The demo's report: PNG plots, one self-contained HTML page, and a Rich summary for the terminal.

Plots are drawn with matplotlib's object API on the Agg canvas (no global pyplot state, no
display needed); the HTML page embeds them as base64 data URIs, so it can be mailed or opened
from anywhere. Each file is written to a temporary name and renamed, so a crash never leaves a
half-written report.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from prefloop._files import atomic_path, write_atomic
from prefloop.demo._result import DemoResult

__all__ = [
    "PlottedArm",
    "allocation_figure",
    "arm_means_figure",
    "plot_allocation",
    "plot_arm_means",
    "plot_regret_curves",
    "png_bytes",
    "regret_figure",
    "rich_summary",
    "write_html",
    "write_report",
]

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def write_report(result: DemoResult, folder: Path) -> dict[str, Path]:
    """Write the three plots and ``report.html`` into ``folder``; returns their paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "arm_means_png": plot_arm_means(result, folder / "arm_means.png"),
        "regret_png": plot_regret_curves(result, folder / "regret.png"),
        "allocation_png": plot_allocation(result, folder / "allocation.png"),
    }
    files["html"] = write_html(result, folder / "report.html", images=files)
    return files


# -- plots -------------------------------------------------------------------------------------
def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path, suffix=path.suffix) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return path


def _color(index: int) -> str:
    return _COLORS[index % len(_COLORS)]


class PlottedArm(Protocol):
    """What the plots need of an arm (the demo's :class:`ArmResult`, the dashboard's rows)."""

    @property
    def name(self) -> str: ...
    @property
    def rated(self) -> int: ...
    @property
    def mean(self) -> float | None: ...
    @property
    def interval(self) -> tuple[float, float] | None: ...


def png_bytes(figure: Any) -> bytes:
    """A figure drawn as PNG bytes (the dashboard serves them)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def plot_arm_means(result: DemoResult, path: Path) -> Path:
    """Per-arm mean reward with its 95% interval; the recommended arm drawn solid."""
    figure = arm_means_figure(
        result.arms, recommended=result.recommended, confidence=result.confidence
    )
    return _save(figure, path)


def arm_means_figure(
    arms: Sequence[PlottedArm], *, recommended: str | None, confidence: float | None
) -> Any:
    """The figure of :func:`plot_arm_means` from any arms' means and intervals."""
    figure = _figure((7.5, 0.6 * max(len(arms), 2) + 1.6))
    axes = figure.add_subplot()
    names = [arm.name for arm in arms]
    y = np.arange(len(names))[::-1]
    for row, (k, arm) in zip(y, enumerate(arms), strict=True):
        if arm.mean is None or arm.interval is None:
            axes.text(0.0, row, "no ratings", va="center", ha="center", color="grey")
            continue
        low, high = arm.interval
        is_recommended = arm.name == recommended
        # The interval is a posterior one (Jeffreys prior, shrunk toward the middle of the
        # scale); with few ratings the raw mean can sit at or beyond its edge, so both are drawn
        # as they are rather than as offsets from the mean.
        axes.hlines(row, low, high, color=_color(k), linewidth=2)
        axes.vlines([low, high], row - 0.12, row + 0.12, color=_color(k), linewidth=2)
        axes.plot(
            [arm.mean],
            [row],
            "o",
            color=_color(k),
            markerfacecolor=_color(k) if is_recommended else "white",
            markersize=9,
        )
        axes.annotate(
            f"{arm.mean:+.2f}  (n={arm.rated})",
            (high, row),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    axes.set_yticks(y, names)
    axes.set_xlim(-1.15, 1.6)
    axes.axvline(0.0, color="grey", linewidth=0.6)
    axes.set_xlabel("mean rating (dot) and 95% credible interval of the mean")
    title = "Reward per prompt"
    if recommended is not None and confidence is not None:
        title += f": {recommended} recommended (P(best) = {confidence:.2f})"
    axes.set_title(title, fontsize=11)
    axes.grid(True, axis="x", alpha=0.3)
    return figure


def plot_regret_curves(result: DemoResult, path: Path) -> Path:
    """Cumulative regret of the bandit's choices next to uniform allocation's expectation."""
    figure = regret_figure(
        result.regret_curve,
        result.uniform_curve,
        policy=result.policy,
        regret_policy=result.regret_policy,
        regret_uniform=result.regret_uniform,
    )
    return _save(figure, path)


def regret_figure(
    regret_curve: Sequence[float],
    uniform_curve: Sequence[float],
    *,
    policy: str,
    regret_policy: float,
    regret_uniform: float,
    steps: Sequence[float] | None = None,
) -> Any:
    """The figure of :func:`plot_regret_curves`; ``steps`` (default 1, 2, …) are the x values
    of the curves' points (a long log is drawn from a subsample)."""
    figure = _figure((7.5, 4.2))
    axes = figure.add_subplot()
    xs = np.arange(1, len(regret_curve) + 1) if steps is None else np.asarray(steps)
    if len(xs):
        axes.plot(xs, regret_curve, label=f"bandit ({policy})", linewidth=2)
        axes.plot(
            xs,
            uniform_curve,
            label="uniform allocation (expected)",
            linestyle="--",
            linewidth=2,
        )
        axes.legend(fontsize=9)
    else:
        axes.text(0.5, 0.5, "no rated decisions", ha="center", transform=axes.transAxes)
    axes.set_xlabel("decisions")
    axes.set_ylabel("cumulative regret")
    axes.set_title(
        "Regret against the best arm's estimated mean "
        f"(bandit {regret_policy:.1f} vs uniform {regret_uniform:.1f})",
        fontsize=11,
    )
    axes.grid(True, alpha=0.3)
    return figure


def plot_allocation(result: DemoResult, path: Path) -> Path:
    """How many times each arm had been chosen after each decision."""
    return _save(allocation_figure([arm.name for arm in result.arms], result.chosen), path)


def allocation_figure(arm_names: Sequence[str], chosen: Sequence[str]) -> Any:
    """The figure of :func:`plot_allocation`: times each arm was chosen after each decision
    (a long log is drawn at up to 2,000 points)."""
    figure = _figure((7.5, 4.2))
    axes = figure.add_subplot()
    steps = np.arange(1, len(chosen) + 1)
    every = max(1, len(chosen) // 2000)
    picked = np.asarray(chosen, dtype=object)
    for k, name in enumerate(arm_names):
        picks = np.cumsum(picked == name)
        axes.plot(steps[::every], picks[::every], label=name, color=_color(k), linewidth=2)
    if len(steps):
        axes.plot(
            steps[::every],
            steps[::every] / max(len(arm_names), 1),
            color="grey",
            linestyle=":",
            label="uniform",
        )
        axes.legend(fontsize=9)
    axes.set_xlabel("decisions")
    axes.set_ylabel("times chosen so far")
    axes.set_title("Allocation over time", fontsize=11)
    axes.grid(True, alpha=0.3)
    return figure


# -- HTML --------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:980px;margin:2em auto;
padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border-bottom:1px solid #e4e4e4;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{background:#eef7ee}
.callout{background:#f3f7fc;border-left:4px solid #1f77b4;padding:.6em 1em;margin:1em 0}
.warn{background:#fff6e5;border-left:4px solid #ff9800;padding:.6em 1em;margin:1em 0}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
pre{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:.5em}
.muted{color:#666;font-size:.9em}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, fmt: str = "+.3f") -> str:
    return "–" if value is None else format(value, fmt)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def write_html(result: DemoResult, path: Path, *, images: dict[str, Path]) -> Path:
    """One self-contained page (CSS inline, plots embedded) summarising the run."""
    parts: list[str] = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>prefloop demo: {_e(result.task)}</title><style>{_CSS}</style></head><body>",
        f"<h1>prefloop demo — task <code>{_e(result.task)}</code></h1>",
        f"<p class='muted'>{result.requests} simulated requests · policy "
        f"<code>{_e(result.policy)}</code> · model <code>{_e(result.model)}</code> · "
        f"store <code>{_e(result.database_url)}</code></p>",
    ]
    if result.recommended is not None:
        verdict = "confident" if result.confident else "not yet confident"
        parts.append(
            f"<div class='callout'><b>Recommended prompt: {_e(result.recommended)}</b> — "
            f"probability {result.confidence:.3f} that it is the best ({verdict} at the "
            f"{result.threshold:g} threshold). Regret of the bandit: "
            f"<b>{result.regret_policy:.2f}</b> against <b>{result.regret_uniform:.2f}</b> "
            "expected from uniform allocation.</div>"
        )
    parts.append(
        "<div class='warn'>The ratings come from a <b>rubric scorer</b>, the demo's stand-in for "
        "people: it checks length, that place, company and mood are mentioned, that there is no "
        "meta text and no repetition. Point the same loop at real people with "
        "<code>prefloop serve</code>.</div>"
    )
    if result.proposal.fallbacks or result.proposal.reused:
        parts.append(f"<div class='warn'>{_e(result.proposal.message)}</div>")
    parts.append(_arms_table(result))
    parts.append("<h2>Mean reward per prompt</h2>" + _img(images["arm_means_png"], "arm means"))
    parts.append("<h2>Regret</h2>" + _img(images["regret_png"], "cumulative regret"))
    parts.append(
        "<p class='muted'>Regret counts, for each decision, how far the chosen prompt's estimated "
        "mean falls short of the best prompt's; uniform allocation's regret is its expectation "
        "under the same estimates.</p>"
    )
    parts.append("<h2>Allocation over time</h2>" + _img(images["allocation_png"], "allocation"))
    parts.append(_reward_model_section(result))
    parts.append(_trained_section(result))
    parts.append(_proposal_section(result))
    parts.append(_examples_section(result))
    parts.append(_timings_section(result))
    parts.append("</body></html>")
    text = "\n".join(parts)
    write_atomic(path, text)
    return path


def _arms_table(result: DemoResult) -> str:
    rows = []
    for arm in result.arms:
        interval = (
            "–" if arm.interval is None else f"[{arm.interval[0]:+.2f}, {arm.interval[1]:+.2f}]"
        )
        css = " class='best'" if arm.name == result.recommended else ""
        rows.append(
            f"<tr{css}><td><b>{_e(arm.name)}</b><br><span class='muted'>{_e(arm.created_by)}"
            f"</span></td><td>{_e(arm.template)}</td><td class='num'>{arm.rated}</td>"
            f"<td class='num'>{arm.failed}</td><td class='num'>{_num(arm.mean)}</td>"
            f"<td class='num'>{interval}</td><td class='num'>{arm.share:.0%}</td>"
            f"<td class='num'>{_num(arm.p_best, '.3f')}</td></tr>"
        )
    return (
        "<h2>Prompts</h2><table><tr><th>arm</th><th>template</th><th>rated</th><th>failed</th>"
        "<th>mean</th><th>95% interval</th><th>share</th><th>P(best)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _reward_model_section(result: DemoResult) -> str:
    model = result.reward_model
    if model is None:
        return ""
    head = f"<h2>Reward model ({_e(model.kind)}, {model.ratings} ratings)</h2>"
    if model.skipped:
        return head + f"<p>Not fitted: {_e(model.skipped)}</p>"
    m = model.metrics
    rows = "".join(
        f"<tr><td>{label}</td><td class='num'>{m[a]:.3f}</td><td class='num'>{m[b]:.3f}</td></tr>"
        for label, a, b in (("MSE", "cv_mse", "baseline_mse"), ("MAE", "cv_mae", "baseline_mae"))
    )
    gain = (
        f"MSE reduction {m['mse_reduction']:+.3f} (95% bootstrap interval "
        f"[{m['mse_reduction_ci_low']:+.3f}, {m['mse_reduction_ci_high']:+.3f}]), Spearman "
        f"correlation {m['cv_spearman']:.2f}: "
        + (
            "the model beats the baseline."
            if model.beats_baseline
            else "the model is not clearly better than the baseline (the interval includes 0)."
        )
    )
    where = f"<p class='muted'>Saved in <code>{_e(model.path)}</code>.</p>" if model.path else ""
    return (
        head
        + "<p>Cross-validated on the run's ratings (each text predicted by a model that did not "
        "see it), next to the baseline that predicts each training fold's mean rating.</p>"
        + "<table><tr><th>out-of-fold</th><th>model</th><th>training mean</th></tr>"
        + rows
        + f"</table><p>{_e(gain)}</p>{where}"
    )


def _trained_section(result: DemoResult) -> str:
    trained = result.trained
    if trained is None:
        return ""
    loss = f"{_num(trained.loss_first, '.4f')} → {_num(trained.loss_last, '.4f')}"
    return (
        "<h2>The trained model as an arm</h2>"
        f"<p>A LoRA adapter trained with {_e(trained.method.upper())} on {trained.examples} "
        f"rated outputs ({trained.steps} steps, {trained.seconds:.0f} s, loss {_e(loss)}) joined "
        f"the bandit as arm <code>{_e(trained.arm)}</code>; {trained.rated} of its outputs were "
        f"rated. Mean reward {_num(trained.mean)} against {_num(trained.best_prompt_mean)} for "
        f"the best prompt, {_e(trained.best_prompt)}.</p>"
        f"<p><strong>{_e(trained.verdict)}</strong></p>"
    )


def _proposal_section(result: DemoResult) -> str:
    outcome = result.proposal
    parts = [f"<h2>Candidate prompts</h2><p>{_e(outcome.message)}.</p>"]
    if outcome.rejected:
        rows = "".join(
            f"<tr><td><pre>{_e(t)}</pre></td><td>{_e(r)}</td></tr>" for t, r in outcome.rejected
        )
        parts.append(
            f"<details><summary>{len(outcome.rejected)} rejected proposal(s)</summary>"
            f"<table><tr><th>proposal</th><th>why rejected</th></tr>{rows}</table></details>"
        )
    if outcome.errors:
        parts.append("<ul>" + "".join(f"<li>{_e(e)}</li>" for e in outcome.errors) + "</ul>")
    return "".join(parts)


def _examples_section(result: DemoResult) -> str:
    if not result.examples:
        return ""
    rows = "".join(
        f"<tr><td>{_e(ex.arm)}</td><td>{_e(', '.join(ex.inputs.values()))}</td>"
        f"<td><pre>{_e(ex.output)}</pre></td><td class='num'>{ex.rating:+.1f}</td>"
        f"<td>{_e('; '.join(ex.reasons) or 'no rule broken')}</td></tr>"
        for ex in result.examples
    )
    return (
        "<h2>Examples (best and worst rated output per prompt)</h2>"
        "<table><tr><th>arm</th><th>input</th><th>output</th><th>rating</th>"
        f"<th>rubric</th></tr>{rows}</table>"
    )


def _timings_section(result: DemoResult) -> str:
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td class='num'>{v:.1f} s</td></tr>"
        for k, v in result.timings.items()
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in result.notes)
    return f"<h2>Timings</h2><table><tr><th>phase</th><th>time</th></tr>{rows}</table>" + (
        f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""
    )


# -- terminal ----------------------------------------------------------------------------------
_BY = {"human": "by a person", "proposer": "by the LLM", "demo-fallback": "fallback"}


def rich_summary(result: DemoResult) -> RenderableType:
    """The terminal summary: the arms table, the recommendation, regret and report paths."""
    # Fits an 80-column terminal: where each arm came from is said below the table, and the
    # failures column appears only when some LLM call failed.
    table = Table(title=f"prefloop demo — {result.task} ({result.requests} requests)")
    show_failed = any(arm.failed for arm in result.arms)
    table.add_column("arm", no_wrap=True)
    columns = ("n", "fail", "mean", "95% interval", "share", "P(best)")
    for column in columns if show_failed else tuple(c for c in columns if c != "fail"):
        table.add_column(column, justify="right", no_wrap=True)
    for arm in result.arms:
        interval = (
            "–" if arm.interval is None else f"[{arm.interval[0]:+.2f}, {arm.interval[1]:+.2f}]"
        )
        cells = [arm.name, str(arm.rated)]
        if show_failed:
            cells.append(str(arm.failed))
        cells += [_num(arm.mean, "+.2f"), interval, f"{arm.share:.0%}", _num(arm.p_best, ".2f")]
        style = "bold green" if arm.name == result.recommended else None
        table.add_row(*cells, style=style)
    lines: list[RenderableType] = [table]
    if result.recommended is not None:
        verdict = "confident" if result.confident else "not yet confident"
        lines.append(
            Text.assemble(
                ("recommended: ", "bold"),
                (result.recommended, "bold green"),
                f"  P(best) = {result.confidence:.3f} ({verdict} at {result.threshold:g})",
            )
        )
        lines.append(Text(f"template: {result.arm(result.recommended).template}"))
    lines.append(
        Text(
            f"regret: bandit {result.regret_policy:.2f} vs uniform allocation "
            f"{result.regret_uniform:.2f} (against the best arm's estimated mean)"
        )
    )
    origins = ", ".join(
        f"{arm.name} ({_BY.get(arm.created_by, arm.created_by)})" for arm in result.arms
    )
    lines.append(Text(f"arms: {origins}"))
    lines.append(Text(f"candidates: {result.proposal.message}"))
    if result.reward_model is not None:
        lines.append(Text(f"reward model: {result.reward_model.summary}"))
    if result.trained is not None:
        lines.append(Text(f"trained arm ({result.trained.method}): {result.trained.verdict}"))
    for note in result.notes:
        lines.append(Text(f"note: {note}", style="yellow"))
    for name, file in result.files.items():
        lines.append(Text(f"{name}: {file}", style="dim"))
    total = sum(result.timings.values())
    lines.append(
        Text(
            "time: "
            + ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items())
            + f" (total {total:.0f}s)",
            style="dim",
        )
    )
    return Group(*lines)
