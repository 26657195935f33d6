"""/v1/generate with model arms: a trained adapter answers on this machine, prompt arms go to
the configured backend (the chat server, which echoes the prompt)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefloop.llm import GenerationParams, LocalChatBackend
from prefloop.store import Arm, BanditDecision, Generation
from tests.serve.conftest import Api, AppFactory, chat_backend, row_counts
from tests.support.chat_server import ChatServer
from tests.support.tiny_adapter import TinyModels

TEMPLATE = "Diary about {place} with {company}."
INPUTS = {"place": "Jeju", "company": "my sister"}
GREEDY = {"temperature": 0, "max_tokens": 6}


def add_model_arm(api: Api, name: str, folder: Path) -> None:
    body = {"name": name, "model_ref": str(folder), "params": {"template": TEMPLATE}}
    answer = api.call("POST", "/v1/tasks/diary/arms", json=body)
    assert answer.status_code == 201, answer.text


def generate(api: Api, **fields: Any) -> Any:
    body = {"task": "diary", "inputs": INPUTS, "params": GREEDY, **fields}
    return api.call("POST", "/v1/generate", "client", json=body)


def adapter_answer(folder: Path) -> str:
    from prefloop.train.models import load_trained

    model, tokenizer, _ = load_trained(folder)
    completion = LocalChatBackend(model=model, tokenizer=tokenizer).complete(
        [{"role": "user", "content": TEMPLATE.format(**INPUTS)}],
        GenerationParams(max_tokens=6, temperature=0.0),
    )
    return completion.text


def test_generate_serves_a_model_arm_with_its_adapter(
    make_api: AppFactory, chat_server: ChatServer, tiny_models: TinyModels
) -> None:
    api = make_api(backend=chat_backend(chat_server))
    api.seed(arms={})
    add_model_arm(api, "tuned", tiny_models.adapter_a)
    answer = generate(api, end_user="u1")
    assert answer.status_code == 200, answer.text
    generation = answer.json()
    assert generation["status"] == "ok" and generation["model"] == "local:adapter-a"
    assert generation["prompt"] == TEMPLATE.format(**INPUTS)
    assert generation["output"] == adapter_answer(tiny_models.adapter_a)
    assert chat_server.chat_requests == []  # the configured backend was not called
    assert api.rate(generation["id"], 1).status_code == 201


def test_one_task_with_a_prompt_arm_and_a_model_arm_routes_each_request_by_its_arm(
    make_api: AppFactory, chat_server: ChatServer, tiny_models: TinyModels
) -> None:
    api = make_api(backend=chat_backend(chat_server))
    api.seed(arms={"vivid": TEMPLATE})
    add_model_arm(api, "tuned", tiny_models.adapter_a)
    expected = adapter_answer(tiny_models.adapter_a)
    seen: dict[str, set[tuple[str, str]]] = {}
    for seed in range(8):
        answer = generate(api, seed=seed)
        assert answer.status_code == 200, answer.text
        generation = answer.json()
        with api.store.session(readonly=True) as session:
            decision = session.get(BanditDecision, generation["decision_id"])
            chosen = session.get(Arm, decision.arm_id) if decision is not None else None
            assert chosen is not None
            arm = chosen.name
        seen.setdefault(arm, set()).add((generation["model"], generation["output"]))
    assert set(seen) == {"vivid", "tuned"}, seen  # the seeds pick both arms
    assert seen["tuned"] == {("local:adapter-a", expected)}
    assert {model for model, _ in seen["vivid"]} == {chat_server.model}
    assert all(output.startswith("echo: Diary about Jeju") for _, output in seen["vivid"])
    tuned = sum(row.model == "local:adapter-a" for row in _generations(api))
    assert 0 < tuned < 8 and len(chat_server.chat_requests) == 8 - tuned


def test_a_model_arm_whose_folder_is_gone_is_refused_before_anything_is_kept(
    make_api: AppFactory, chat_server: ChatServer, tiny_models: TinyModels, tmp_path: Path
) -> None:
    api = make_api(backend=chat_backend(chat_server))
    api.seed(arms={})
    copy = Path(shutil.copytree(tiny_models.adapter_a, tmp_path / "gone"))
    add_model_arm(api, "gone", copy)
    shutil.rmtree(copy)
    before = row_counts(api.store)
    answer = generate(api)
    assert answer.status_code == 409, answer.text  # the request contradicts the store
    assert "does not exist" in answer.json()["detail"]
    assert row_counts(api.store) == before


def _generations(api: Api) -> list[Generation]:
    from sqlalchemy import select

    with api.store.session(readonly=True) as session:
        return list(session.scalars(select(Generation)).all())
