"""Model arms: a trained adapter (or any model folder) as an arm, served by its own model.

The prompt arms go to the chat server (it echoes the prompt), the model arms to the tiny Llama
and its adapters; each model arm's output is checked against the same model run directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from prefloop.errors import ConflictError, InvalidInputError
from prefloop.llm import (
    GenerationParams,
    GenerationRequest,
    LocalChatBackend,
    Message,
    ModelArms,
    add_model_arm,
    check_model_folder,
    generate_batch,
    generate_for_arm,
)
from prefloop.llm._arms import default_model_template
from prefloop.store import Arm, Generation, Store
from prefloop.store.repo import create_arm, get_arm, get_or_create_task, get_task
from tests.llm.test_generate import backend_for
from tests.support.chat_server import ChatServer
from tests.support.tiny_adapter import TinyModels

PROMPT = "Write a diary line about {place}."
GREEDY = GenerationParams(max_tokens=6, temperature=0.0)
PLACES = ["Jeju", "Busan", "Seoul"]


def setup(store: Store, models: TinyModels) -> None:
    """Task diary: prompt arm ``prompt`` (production), model arms ``a``, ``b`` and ``base``."""
    with store.session() as s:
        task = get_or_create_task(s, "diary", input_fields=["place"])
        create_arm(s, task, "prompt", template=PROMPT, labels=["production"])
        add_model_arm(s, task, "a", models.adapter_a)
        add_model_arm(s, task, "b", models.adapter_b)
        add_model_arm(s, task, "base", models.base)


def direct(model: Any, tokenizer: Any, prompts: list[str]) -> list[str]:
    """What ``model`` answers to these user messages, greedy, as one batch."""
    backend = LocalChatBackend(model=model, tokenizer=tokenizer)
    batch: list[list[Message]] = [[{"role": "user", "content": p}] for p in prompts]
    return [c.text for c in backend.complete_batch(batch, GREEDY)]  # type: ignore[union-attr]


def arm_count(store: Store) -> int:
    with store.session(readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(Arm)) or 0)


def test_a_batch_routes_prompt_arms_to_the_backend_and_model_arms_to_their_adapters(
    sqlite_store: Store, tiny_models: TinyModels, chat_server: ChatServer
) -> None:
    from prefloop.train.models import load_base, load_trained

    setup(sqlite_store, tiny_models)
    served = ModelArms(batch_size=8)
    with sqlite_store.session() as s:
        task = get_task(s, "diary")
        arms = {name: get_arm(s, task, name) for name in ("prompt", "a", "b", "base")}
        requests = [
            GenerationRequest(arms[name], {"place": place})
            for place in PLACES
            for name in ("prompt", "a", "b", "base")
        ]
        generations = generate_batch(
            s, task, requests, backend_for(chat_server), GREEDY, model_arms=served
        )
        rows = [
            (r.arm.name, g.prompt, g.output, g.model, g.status)
            for r, g in zip(requests, generations, strict=True)
        ]
    assert all(status == "ok" for *_, status in rows)
    by_arm: dict[str, list[tuple[str, str]]] = {}
    for name, prompt, output, _model, _status in rows:
        by_arm.setdefault(name, []).append((str(prompt), str(output)))
    prompts = [PROMPT.format(place=p) for p in PLACES]
    # the model arms use the production arm's template: the same user message for every arm
    assert all([p for p, _ in by_arm[name]] == prompts for name in by_arm)
    assert all(o.startswith("echo: Write a diary") for _, o in by_arm["prompt"])
    sent = sorted(r.messages[-1]["content"] for r in chat_server.chat_requests)
    assert sent == sorted(prompts)  # only the prompt arm went to the backend
    base_model, tokenizer = load_base(tiny_models.base)
    expected = {"base": direct(base_model, tokenizer, prompts)}
    for name, folder in (("a", tiny_models.adapter_a), ("b", tiny_models.adapter_b)):
        model, tokenizer, _ = load_trained(folder)
        expected[name] = direct(model, tokenizer, prompts)
    for name in ("a", "b", "base"):
        assert [o for _, o in by_arm[name]] == expected[name], name
    assert expected["a"] != expected["base"] and expected["b"] != expected["base"]
    assert expected["a"] != expected["b"]
    models = {name: model for name, _p, _o, model, _s in rows}
    assert models["a"] == "local:adapter-a" and models["b"] == "local:adapter-b"
    assert models["base"] == "local:base" and models["prompt"] == chat_server.model
    assert served.base_count == 1  # one base in memory for the base arm and both adapters


def test_switching_adapters_back_and_forth_gives_the_same_outputs(
    sqlite_store: Store, tiny_models: TinyModels
) -> None:
    setup(sqlite_store, tiny_models)
    served = ModelArms()
    outputs: list[tuple[str, str]] = []
    with sqlite_store.session() as s:
        task = get_task(s, "diary")
        for name in ("a", "b", "base", "a", "base", "b"):
            generation = generate_for_arm(
                s, task, get_arm(s, task, name), {"place": "Jeju"}, None, GREEDY, model_arms=served
            )
            assert generation.status == "ok", generation.error
            outputs.append((name, str(generation.output)))
    first = dict(outputs[:3])
    assert dict(outputs[3:]) == first and len(set(first.values())) == 3


def test_a_model_arm_serves_without_a_backend_and_a_prompt_arm_needs_one(
    sqlite_store: Store, tiny_models: TinyModels
) -> None:
    setup(sqlite_store, tiny_models)
    with sqlite_store.session() as s:
        task = get_task(s, "diary")
        generation = generate_for_arm(
            s, task, get_arm(s, task, "a"), {"place": "Jeju"}, None, GREEDY
        )
        assert generation.status == "ok" and generation.model == "local:adapter-a"
        with pytest.raises(InvalidInputError, match="prompt arm and needs an LLM backend"):
            generate_for_arm(s, task, get_arm(s, task, "prompt"), {"place": "Jeju"}, None, GREEDY)


def test_the_default_template_is_the_production_prompt_else_the_input_fields(
    sqlite_store: Store, tiny_models: TinyModels
) -> None:
    with sqlite_store.session() as s:
        task = get_or_create_task(s, "qa", input_fields=["question", "context"])
        assert default_model_template(s, task) == "question: {question}\ncontext: {context}"
        create_arm(s, task, "old", template="Old {question}", labels=["production", "retired"])
        create_arm(s, task, "cand", template="Cand {question}")
        assert default_model_template(s, task) == "question: {question}\ncontext: {context}"
        create_arm(
            s, task, "prod", template="Answer {question} from {context}.", labels=["production"]
        )
        assert default_model_template(s, task) == "Answer {question} from {context}."
        arm = add_model_arm(s, task, "m", tiny_models.adapter_a, template="Q: {question}")
        assert arm.kind == "model" and arm.params["template"] == "Q: {question}"
        assert arm.model_ref == str(tiny_models.adapter_a.resolve())
        packaged = add_model_arm(s, task, "smollm2", "smollm2")  # the packaged model, by name
        assert packaged.model_ref == "smollm2"
        assert packaged.params["template"] == "Answer {question} from {context}."
        bare = get_or_create_task(s, "bare")
        with pytest.raises(InvalidInputError, match="give one with --template"):
            default_model_template(s, bare)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp, _m: tmp / "missing", "does not exist"),
        (lambda _tmp, _m: "", "the model folder is empty"),
        (lambda tmp, _m: tmp, "is not a model folder"),
        (lambda tmp, _m: _classifier(tmp), "not a causal language model"),
        (lambda tmp, _m: _no_chat_template(tmp, _m), "no chat template"),
        (lambda tmp, _m: _adapter_without_base(tmp, _m), "does not exist"),
    ],
    ids=["missing", "blank", "empty", "classifier", "no-chat-template", "base-gone"],
)
def test_a_folder_that_is_not_a_servable_model_is_refused_and_nothing_is_stored(
    sqlite_store: Store, tiny_models: TinyModels, tmp_path: Path, make: Any, message: str
) -> None:
    setup(sqlite_store, tiny_models)
    before = arm_count(sqlite_store)
    folder = make(tmp_path, tiny_models)
    with pytest.raises(InvalidInputError, match=message):
        check_model_folder(folder)
    with pytest.raises(InvalidInputError, match=message), sqlite_store.session() as s:
        add_model_arm(s, get_task(s, "diary"), "new", folder)
    assert arm_count(sqlite_store) == before


def test_a_duplicate_name_and_a_template_with_unknown_fields_are_refused(
    sqlite_store: Store, tiny_models: TinyModels
) -> None:
    setup(sqlite_store, tiny_models)
    before = arm_count(sqlite_store)
    with (
        pytest.raises(ConflictError, match="already has an arm named 'a'"),
        sqlite_store.session() as s,
    ):
        add_model_arm(s, get_task(s, "diary"), "a", tiny_models.adapter_b)
    with pytest.raises(InvalidInputError, match=r"\{mood\}"), sqlite_store.session() as s:
        add_model_arm(s, get_task(s, "diary"), "c", tiny_models.adapter_b, template="{mood}")
    assert arm_count(sqlite_store) == before


def test_a_model_folder_removed_after_the_arm_was_added_stores_nothing(
    sqlite_store: Store, tiny_models: TinyModels, tmp_path: Path
) -> None:
    import shutil

    copy = Path(shutil.copytree(tiny_models.adapter_a, tmp_path / "gone"))
    with sqlite_store.session() as s:
        task = get_or_create_task(s, "diary", input_fields=["place"])
        add_model_arm(s, task, "gone", copy, template=PROMPT)
    shutil.rmtree(copy)
    with pytest.raises(InvalidInputError, match="does not exist"), sqlite_store.session() as s:
        task = get_task(s, "diary")
        generate_batch(
            s, task, [GenerationRequest(get_arm(s, task, "gone"), {"place": "Jeju"})], None, GREEDY
        )
    with sqlite_store.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Generation)) == 0


def _classifier(tmp: Path) -> Path:
    folder = tmp / "classifier"
    folder.mkdir()
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _no_chat_template(tmp: Path, models: TinyModels) -> Path:
    import shutil

    folder = Path(shutil.copytree(models.base, tmp / "plain"))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data.pop("chat_template", None)
    config.write_text(json.dumps(data), encoding="utf-8")
    return folder


def _adapter_without_base(tmp: Path, models: TinyModels) -> Path:
    import shutil

    from prefloop.train.models import read_manifest, write_manifest

    folder = Path(shutil.copytree(models.adapter_a, tmp / "orphan"))
    manifest = read_manifest(folder)
    write_manifest(folder, type(manifest)(**{**manifest.to_json(), "base": str(tmp / "nobase")}))
    return folder


def test_a_whole_trained_model_and_an_adapter_trained_on_it_are_served(
    sqlite_store: Store, tiny_models: TinyModels, tmp_path: Path
) -> None:
    import shutil

    from prefloop.train.models import TrainedManifest, load_trained, write_manifest
    from tests.support.tiny_adapter import build_tiny_adapter

    whole = Path(shutil.copytree(tiny_models.base, tmp_path / "whole"))
    write_manifest(whole, TrainedManifest(method="sft", base="smollm2", adapter=False))
    chained = build_tiny_adapter(whole, tmp_path / "chained", seed=3)
    with sqlite_store.session() as s:
        task = get_or_create_task(s, "diary", input_fields=["place"])
        add_model_arm(s, task, "whole", whole, template=PROMPT)
        add_model_arm(s, task, "chained", chained, template=PROMPT)
    served = ModelArms()
    prompt = PROMPT.format(place="Jeju")
    outputs: dict[str, str] = {}
    with sqlite_store.session() as s:
        task = get_task(s, "diary")
        for name, folder in (("whole", whole), ("chained", chained), ("whole", whole)):
            generation = generate_for_arm(
                s, task, get_arm(s, task, name), {"place": "Jeju"}, None, GREEDY, model_arms=served
            )
            model, tokenizer, _ = load_trained(folder)
            assert generation.output == direct(model, tokenizer, [prompt])[0], name
            assert generation.model == f"local:{folder.name}"
            outputs[name] = str(generation.output)
    assert outputs["whole"] != outputs["chained"]


def test_concurrent_batches_of_two_adapters_do_not_switch_under_each_other(
    tiny_models: TinyModels,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    served = ModelArms(batch_size=4)
    refs = [str(tiny_models.adapter_a), str(tiny_models.adapter_b), str(tiny_models.base)]
    batch: list[list[Message]] = [[{"role": "user", "content": f"Day {i}"}] for i in range(3)]

    def texts(ref: str) -> list[str]:
        return [c.text for c in served.backend(ref).complete_batch(batch, GREEDY)]  # type: ignore[union-attr]

    alone = {ref: texts(ref) for ref in refs}
    assert len({tuple(v) for v in alone.values()}) == 3
    with ThreadPoolExecutor(max_workers=3) as pool:
        together = list(pool.map(texts, refs * 4))
    assert together == [alone[ref] for ref in refs * 4]
    assert served.base_count == 1
