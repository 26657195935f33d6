"""Training under ``accelerate launch`` with two CPU processes, and once on the real SmolLM2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from prefloop.store import Store, TrainingRun
from tests.train.conftest import pair_rows, write_jsonl


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFLOOP_REFERENCE_CACHE"] = str(tmp_path / "refs")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.mark.slow
def test_a_tiny_dpo_runs_to_the_end_under_accelerate_launch_on_two_processes(
    tiny_base: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    out, url = tmp_path / "out", f"sqlite:///{tmp_path / 'p.db'}"
    launcher = Path(sys.executable).with_name("accelerate")
    command = [
        *(str(launcher), "launch", "--num_processes", "2", "--cpu", "-m", "prefloop"),
        *("train", "dpo", "--data", str(data), "--base", str(tiny_base), "--out", str(out)),
        *("--max-steps", "2", "--batch-size", "1", "--db", url, "--json"),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=_env(tmp_path), check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1  # only the main process prints
    assert results[0]["steps"] == 2 and results[0]["examples"] == 4
    assert (out / "adapter_config.json").exists() and (out / "prefloop-train.json").exists()
    with Store.open(url) as store, store.session(readonly=True) as s:
        runs = s.scalars(select(TrainingRun)).all()
    assert [(r.method, r.status) for r in runs] == [("dpo", "done")]  # recorded once


@pytest.mark.slow
def test_train_dpo_on_the_packaged_smollm2_with_8_pairs(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": f"Write one line about day {i}.",
            "chosen": "A calm walk by the sea.",
            "rejected": "no",
        }
        for i in range(8)
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "smol"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "prefloop", "train", "dpo", "--data", str(data)),
            *("--out", str(out), "--max-steps", "2", "--max-length", "96", "--json"),
            *("--db", f"sqlite:///{tmp_path / 'p.db'}"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(tmp_path),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["base"] == "smollm2" and result["steps"] == 2 and result["examples"] == 8
    assert result["loss_first"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at first
    manifest = json.loads((out / "prefloop-train.json").read_text())
    assert manifest["base"] == "smollm2" and manifest["adapter"] is True


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint_that_resumes(tiny_base: Path, tmp_path: Path) -> None:
    import signal
    import time

    rows = [{"prompt": f"Write about day {i}.", "completion": "A calm walk."} for i in range(8)]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    out, url = tmp_path / "out", f"sqlite:///{tmp_path / 'p.db'}"
    common = [
        *(sys.executable, "-m", "prefloop", "train", "sft", "--data", str(data)),
        *("--base", str(tiny_base), "--out", str(out), "--db", url, "--batch-size", "1"),
    ]
    process = subprocess.Popen(
        [*common, "--max-steps", "400", "--save-steps", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    checkpoints = tmp_path / "out.checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-4" / "trainer_state.json").exists() and (
        time.monotonic() < deadline
    ):
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "--resume" in " ".join(stderr.split())
    assert not out.exists()  # no model: the run did not finish
    with Store.open(url) as store, store.session(readonly=True) as s:
        assert [r.status for r in s.scalars(select(TrainingRun))] == ["stopped"]
    # Steps are fast on a quiet machine: the run may have saved later checkpoints before the
    # signal arrived; resume two steps past the newest one.
    newest = max(int(c.name.split("-")[1]) for c in checkpoints.glob("checkpoint-*"))
    target = newest + 2
    resumed = subprocess.run(
        [*common, "--max-steps", str(target), "--resume", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(tmp_path),
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == target
    assert (out / "prefloop-train.json").exists()
