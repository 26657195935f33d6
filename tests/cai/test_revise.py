"""``revise``: answer, critique, revise against the real chat-completions test server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefloop.cai import (
    ReviseConfig,
    RevisionResult,
    default_constitution,
    revise,
    write_revisions,
)
from prefloop.errors import InvalidInputError
from prefloop.train import from_file
from tests.cai.conftest import backend_for
from tests.support.chat_server import ChatServer, Fail

PROMPTS = ["How do I pick a lock?", "Write a line about Busan."]


def test_two_rounds_give_the_trace_and_each_round_revises_the_last_answer(
    model_server: ChatServer,
) -> None:
    constitution = default_constitution()
    result = revise(
        backend_for(model_server), PROMPTS, constitution, ReviseConfig(rounds=2, seed=3)
    )

    assert [e.prompt for e in result.examples] == PROMPTS and not result.failures
    assert result.calls == len(PROMPTS) * 5 == len(model_server.chat_requests)
    for example in result.examples:
        first = f"answer to {example.prompt}"
        once = f"better [{first}]"  # the "Revision:" label the model wrote is stripped
        assert example.initial_answer == first
        assert [s.critique for s in example.steps] == [
            f"critique of [{first}]",
            f"critique of [{once}]",
        ]
        assert [s.revision for s in example.steps] == [once, f"better [{once}]"]
        assert example.final == f"better [{once}]"
    # the principle recorded for each round is the one whose requests the model was sent
    by_principle = {p.id: p for p in constitution.principles}
    for example in result.examples:
        for step in example.steps:
            critique_request = by_principle[step.principle].critique
            revision_request = by_principle[step.principle].revision
            asked = [
                r.messages
                for r in model_server.chat_requests
                if r.messages[0]["content"] == example.prompt
                and len(r.messages) == 5
                and r.messages[1]["content"]
                in (example.initial_answer, *[s.revision for s in example.steps])
                and r.messages[3]["content"] == step.critique
            ]
            assert len(asked) == 1
            assert asked[0][2]["content"].startswith(critique_request)
            assert asked[0][4]["content"].startswith(revision_request)


def test_the_principles_are_drawn_with_the_seed(model_server: ChatServer) -> None:
    prompts = [f"question {i}" for i in range(8)]
    backend = backend_for(model_server)

    def drawn(seed: int) -> list[str]:
        result = revise(backend, prompts, default_constitution(), ReviseConfig(seed=seed))
        return [s.principle for e in result.examples for s in e.steps]

    five = drawn(5)
    assert five == drawn(5)
    assert five != drawn(6)
    assert len(set(five)) > 2
    pinned = revise(backend, prompts[:3], default_constitution(), ReviseConfig(principle="privacy"))
    assert {s.principle for e in pinned.examples for s in e.steps} == {"privacy"}


def test_the_file_is_sft_data_with_the_trace_beside_it(
    model_server: ChatServer, tmp_path: Path
) -> None:
    result = revise(backend_for(model_server), PROMPTS, default_constitution(), ReviseConfig())
    out = write_revisions(result, tmp_path / "revised.jsonl")

    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS
    assert [r["completion"] for r in rows] == [e.final for e in result.examples]
    assert rows[0]["initial_answer"] == f"answer to {PROMPTS[0]}"
    assert len(rows[0]["principles"]) == len(rows[0]["critiques"]) == len(rows[0]["revisions"]) == 1
    assert rows[0]["constitution"] == "prefloop-default"
    data = from_file(out, "sft")  # what `prefloop train sft --data` reads
    assert data.rows[1] == {
        "prompt": [{"role": "user", "content": PROMPTS[1]}],
        "completion": [{"role": "assistant", "content": result.examples[1].final}],
    }
    assert not [p for p in tmp_path.iterdir() if p.name != "revised.jsonl"]  # no temporary left


def test_an_hh_dialogue_keeps_its_turns(model_server: ChatServer) -> None:
    dialogue = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: can you help me?\n\nAssistant:"
    result = revise(backend_for(model_server), [dialogue], default_constitution())
    first = model_server.chat_requests[0].messages
    assert [m["role"] for m in first] == ["user", "assistant", "user"]
    assert result.examples[0].initial_answer == "answer to can you help me?"


def test_a_failed_call_leaves_its_prompt_out_and_never_writes_an_empty_revision(
    chat_server: ChatServer, tmp_path: Path
) -> None:
    from tests.cai.conftest import scripted_model

    model = scripted_model()

    def flaky(messages: list[dict[str, object]]) -> object:
        content = str(messages[0]["content"])
        if content == "bad one" and len(messages) == 5:  # its revision call fails
            return Fail(500, "the server broke")
        if content == "empty one":
            return "   "  # an empty answer is not an answer
        return model(messages)  # type: ignore[arg-type]

    chat_server.responder = flaky  # type: ignore[assignment]
    result = revise(
        backend_for(chat_server), ["good one", "bad one", "empty one"], default_constitution()
    )
    assert [e.prompt for e in result.examples] == ["good one"]
    failed = {f.prompt: f for f in result.failures}
    assert failed["bad one"].step == "revision (round 1)"
    assert "LLMServerError" in failed["bad one"].reason
    assert failed["empty one"].step == "answer" and "empty answer" in failed["empty one"].reason
    assert sum(result.errors.values()) == 1
    out = write_revisions(result, tmp_path / "out.jsonl")
    assert len(out.read_text().splitlines()) == 1
    assert result.to_json()["failed"] == 2


def test_when_every_call_fails_nothing_is_written(chat_server: ChatServer, tmp_path: Path) -> None:
    chat_server.responder = lambda messages: Fail(503, "down")
    result = revise(backend_for(chat_server), PROMPTS, default_constitution())
    assert isinstance(result, RevisionResult) and not result.examples
    assert len(result.failures) == 2 and result.calls == 2  # no critique of a missing answer
    target = tmp_path / "out.jsonl"
    with pytest.raises(InvalidInputError, match="every prompt failed"):
        write_revisions(result, target)
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(InvalidInputError, match="is a folder"):
        write_revisions(result, tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        write_revisions(result, tmp_path / "no" / "out.jsonl")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ReviseConfig(rounds=0), "rounds=0"),
        (ReviseConfig(max_tokens=0), "max_tokens=0"),
        (ReviseConfig(temperature=-1), "temperature=-1"),
    ],
)
def test_bad_settings_are_refused_before_any_call(
    chat_server: ChatServer, config: ReviseConfig, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        revise(backend_for(chat_server), PROMPTS, default_constitution(), config)
    with pytest.raises(InvalidInputError, match="no principle 'nope'"):
        revise(
            backend_for(chat_server),
            PROMPTS,
            default_constitution(),
            ReviseConfig(principle="nope"),
        )
    with pytest.raises(InvalidInputError, match="no prompts"):
        revise(backend_for(chat_server), [], default_constitution())
    assert not chat_server.chat_requests
