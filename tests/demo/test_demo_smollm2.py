"""The demo with the real packaged SmolLM2-135M-Instruct, shortened (slow: about a minute on two
free cores once the converted model is cached, ~30 s more the first time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.demo import DIARY, RubricScorer
from prefloop.store import Store
from prefloop.store.models import Generation


@pytest.mark.slow
def test_demo_with_smollm2(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--fast", "--requests", "16", "--max-tokens", "48"]
    run = CliRunner().invoke(app, [*args, "--json"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout.strip().splitlines()[-1])

    assert summary["model"] == "local:SmolLM2-135M-Instruct"
    assert summary["requests"] == 16 and summary["failed"] == 0
    arms = summary["arms"]
    assert len(arms) == 4
    # Whatever the small model proposed, the run says where every candidate came from.
    proposal = summary["proposal"]
    assert len(proposal["accepted"]) + len(proposal["fallbacks"]) == 3
    if proposal["fallbacks"]:
        assert "hand-written variant" in proposal["message"]
    assert summary["recommended"] in {arm["name"] for arm in arms}
    for key in ("arm_means_png", "regret_png", "allocation_png", "html"):
        assert Path(summary["report_files"][key]).stat().st_size > 5_000

    scorer = RubricScorer()
    with Store.open(summary["database_url"]) as store, store.session() as session:
        generations = session.query(Generation).all()
        assert len(generations) == 4 + 16
        assert len({g.arm_id for g in generations}) >= 3
        for g in generations:
            assert g.status == "ok" and g.output
            assert g.completion_tokens is not None and 0 < g.completion_tokens <= 48
            assert g.reward == scorer.score(g.output, DIARY.facts(g.input)).value
