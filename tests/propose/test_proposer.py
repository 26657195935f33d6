"""The proposer against the real local chat server scripting the LLM's answers."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import select

from prefloop.errors import InvalidInputError, NotFoundError
from prefloop.llm import OpenAIChatBackend, RetryPolicy
from prefloop.propose import ProposerConfig, char_ngram_cosine, propose_arms, token_jaccard
from prefloop.propose._meta import parse_templates
from prefloop.store import Arm, Store
from prefloop.store.repo import add_generation, create_arm, get_or_create_task
from tests.support.chat_server import ChatServer

FIELDS = ["place", "company", "mood"]
TEMPLATE_A = "Write a diary entry about {place} with {company}, feeling {mood}."
TEMPLATE_B = (
    "You are a diarist. Write a rich, natural diary entry of a day in {place} spent with "
    "{company}; the mood was {mood}. Only the diary text."
)
TEMPLATE_RETIRED = "Diary. {place} {company} {mood}."
NEW = [
    "Compose a vivid first-person journal page set in {place}, spent with {company}, in a "
    "{mood} mood. Describe sights and sounds in natural sentences.",
    "Imagine keeping a travel notebook. Tell today's trip to {place} together with {company}; "
    "let the {mood} feeling show through small concrete details, about five sentences long.",
    "Draft one warm and detailed personal log: location {place}, companions {company}, "
    "emotion {mood}. No lists, notes or alternatives; just the entry itself.",
]


def marked(*templates: str) -> str:
    return "Here you go:\n" + "\n".join(f"<PROMPT>\n{t}\n</PROMPT>" for t in templates)


def backend_for(server: ChatServer, max_retries: int = 0) -> OpenAIChatBackend:
    return OpenAIChatBackend(
        base_url=server.url,
        api_key="k",
        model=server.model,
        timeout=5.0,
        retry=RetryPolicy(max_retries=max_retries, backoff_initial=0.01),
    )


def seed_task(store: Store) -> dict[str, int]:
    """Arms a (mean 0.375), b (mean 0.6, the best), retired r; failed and unrated outputs."""
    with store.session() as s:
        task = get_or_create_task(
            s,
            "diary",
            description="a photo diary entry from place, company and mood",
            input_fields=FIELDS,
            rubric="+1 rich and natural; -1 breaks the diary format",
        )
        a = create_arm(s, task, "a", template=TEMPLATE_A, labels=["production"])
        b = create_arm(s, task, "b", template=TEMPLATE_B, params={"system": "Be concise."})
        r = create_arm(s, task, "r", template=TEMPLATE_RETIRED, labels=["retired"])
        inputs = {"place": "Busan", "company": "family", "mood": "happy"}
        for k, reward in enumerate([1.0, 0.5, 0.5, -0.5]):
            add_generation(s, task, arm_id=a.id, input=inputs, output=f"a-out-{k}", reward=reward)
        for k, reward in enumerate([1.0, 1.0, 1.0, 0.5, -0.5]):
            add_generation(s, task, arm_id=b.id, input=inputs, output=f"b-out-{k}", reward=reward)
        add_generation(s, task, arm_id=b.id, input=inputs, output="b-unrated-output")
        add_generation(s, task, arm_id=b.id, input=inputs, status="failed", error="b-failure-text")
        add_generation(s, task, arm_id=r.id, input=inputs, output="r-out", reward=-1.0)
        return {"a": a.id, "b": b.id, "r": r.id}


def arms_by_name(store: Store) -> dict[str, Arm]:
    with store.session(readonly=True) as s:
        return {arm.name: arm for arm in s.scalars(select(Arm))}


def test_valid_templates_become_candidate_arms_under_the_best_arm(
    store: Store, chat_server: ChatServer
) -> None:
    ids = seed_task(store)
    chat_server.reply_next(marked(*NEW))

    report = propose_arms(store, "diary", backend_for(chat_server), ProposerConfig(n=3))

    assert report.ok and report.rejected == [] and report.errors == []
    assert [p.template for p in report.accepted] == NEW
    assert [p.name for p in report.accepted] == ["proposed-1", "proposed-2", "proposed-3"]
    assert (report.parent, report.parent_mean_reward) == ("b", pytest.approx(0.6))
    arms = arms_by_name(store)
    for proposed in report.accepted:
        arm = arms[proposed.name or ""]
        assert arm.id == proposed.arm_id and arm.template == proposed.template
        assert arm.parent_id == ids["b"]
        assert arm.created_by == "proposer" and arm.labels == ["candidate"]
        assert arm.params == {"system": "Be concise."}
    (seen,) = chat_server.chat_requests
    words = sum(len(str(m["content"]).split()) for m in seen.messages)
    assert (report.llm_calls, report.prompt_tokens) == (1, words)
    assert report.completion_tokens == len(marked(*NEW).split())


def test_the_meta_prompt_shows_scores_and_the_best_arms_extreme_outputs(
    store: Store, chat_server: ChatServer
) -> None:
    seed_task(store)
    chat_server.reply_next(marked(*NEW[:2]))
    config = ProposerConfig(n=2, n_best_examples=2, n_worst_examples=2)
    propose_arms(store, "diary", backend_for(chat_server), config)

    prompt = chat_server.chat_requests[0].messages[-1]["content"]
    assert 'score="-1.00" ratings="1"' in prompt  # the retired arm, as history
    assert prompt.index('score="0.38" ratings="4"') < prompt.index('score="0.60" ratings="5"')
    best_part = prompt[prompt.index("The current best template:") :]
    assert TEMPLATE_B in best_part and TEMPLATE_A not in best_part
    assert "b-out-0" in best_part and "b-out-1" in best_part  # rated 1.0
    assert "b-out-4" in best_part and "b-out-3" in best_part  # rated -0.5 and 0.5
    assert "b-out-2" not in best_part  # neither among the best two nor the worst two
    assert "Rating: -0.5" in best_part
    for hidden in ("b-unrated-output", "b-failure-text", "a-out-0"):
        assert hidden not in prompt
    assert "{place}, {company}, {mood}" in prompt
    assert "Write 2 new prompt templates" in prompt
    assert "+1 rich and natural" in prompt


def test_near_duplicates_of_arms_and_of_each_other_are_rejected(
    store: Store, chat_server: ChatServer
) -> None:
    seed_task(store)
    copy_of_b = TEMPLATE_B.replace("rich,", "rich and")
    copy_of_retired = "diary.  {PLACE} {company} {mood}".replace("{PLACE}", "{place}")
    copy_of_first = NEW[0].replace("vivid", "lively")
    chat_server.reply_next(marked(copy_of_b, NEW[0], copy_of_first, copy_of_retired, NEW[1]))

    report = propose_arms(store, "diary", backend_for(chat_server), ProposerConfig(n=3))

    assert [p.template for p in report.accepted] == [NEW[0], NEW[1]]
    reasons = {r.template: r.reason for r in report.rejected}
    assert reasons[copy_of_b].startswith("near-duplicate of arm 'b' (token_jaccard")
    assert reasons[copy_of_retired].startswith("near-duplicate of arm 'r'")
    assert reasons[copy_of_first].startswith("near-duplicate of proposed template 1")
    assert report.llm_calls == 3  # two more calls for the missing third template
    assert len(arms_by_name(store)) == 5


def test_templates_with_wrong_placeholders_are_rejected_with_the_reason(
    store: Store, chat_server: ChatServer
) -> None:
    seed_task(store)
    missing = "Write a diary entry about {place} with {company}."
    unknown = "Write about {place} with {company}, feeling {mood}, in {weather} weather."
    broken = "Write about {place with {company}, feeling {mood}."
    chat_server.reply_next(marked(missing, unknown, broken, NEW[2]))

    report = propose_arms(
        store, "diary", backend_for(chat_server), ProposerConfig(n=1, max_llm_calls=1)
    )

    reasons = {r.template: r.reason for r in report.rejected}
    assert reasons[missing] == "missing placeholder(s) {mood}"
    assert reasons[unknown].startswith("unknown placeholder(s) {weather}")
    assert reasons[broken].startswith("not a valid template")
    assert [p.template for p in report.accepted] == [NEW[2]]


def test_a_garbage_answer_is_retried_with_feedback(store: Store, chat_server: ChatServer) -> None:
    seed_task(store)
    chat_server.reply_next("Sure! Here are some ideas: be more vivid.", marked(NEW[0]))

    report = propose_arms(store, "diary", backend_for(chat_server), ProposerConfig(n=1))

    assert report.ok and report.llm_calls == 2
    assert report.rejected[0].reason.startswith("answer: no template between <PROMPT>")
    second = chat_server.chat_requests[1].messages[-1]["content"]
    assert "Your previous answer could not be used: no template between" in second


def test_an_llm_failure_is_reported_and_the_next_call_used(
    store: Store, chat_server: ChatServer
) -> None:
    seed_task(store)
    chat_server.fail_next(503)
    chat_server.reply_next(marked(NEW[0]))

    report = propose_arms(store, "diary", backend_for(chat_server), ProposerConfig(n=1))

    assert report.ok and report.llm_calls == 2
    assert len(report.errors) == 1 and "503" in report.errors[0]


def test_when_nothing_usable_comes_back_no_arm_is_added_and_the_report_says_why(
    store: Store, chat_server: ChatServer
) -> None:
    seed_task(store)
    chat_server.reply_next("no markers here", marked(TEMPLATE_A), "<PROMPT> cut off mid-")

    report = propose_arms(
        store, "diary", backend_for(chat_server), ProposerConfig(n=2, max_llm_calls=3)
    )

    assert not report.ok and report.accepted == []
    assert report.llm_calls == 3 == len(chat_server.chat_requests)
    summary = report.summary()
    assert "no usable template" in summary
    assert "no template between <PROMPT>" in summary
    assert "near-duplicate of arm 'a'" in summary
    assert "without its closing </PROMPT>" in summary
    assert len(arms_by_name(store)) == 3


def test_a_json_answer_is_accepted(store: Store, chat_server: ChatServer) -> None:
    seed_task(store)
    chat_server.reply_next("```json\n" + json.dumps({"prompts": NEW[:2]}) + "\n```")
    report = propose_arms(store, "diary", backend_for(chat_server), ProposerConfig(n=2))
    assert [p.template for p in report.accepted] == NEW[:2]


def test_a_dry_run_checks_but_adds_nothing(store: Store, chat_server: ChatServer) -> None:
    seed_task(store)
    chat_server.reply_next(marked(*NEW))
    report = propose_arms(
        store, "diary", backend_for(chat_server), ProposerConfig(n=2, dry_run=True)
    )
    assert report.ok and report.dry_run
    assert [(p.template, p.name, p.arm_id) for p in report.accepted] == [
        (NEW[0], None, None),
        (NEW[1], None, None),
    ]
    assert len(arms_by_name(store)) == 3
    assert report.to_json()["accepted"][0] == {"template": NEW[0], "name": None, "arm_id": None}


def test_names_continue_after_existing_proposals(store: Store, chat_server: ChatServer) -> None:
    seed_task(store)
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        create_arm(s, task, "proposed-4", template="Some other {place} {company} {mood} thing")
    chat_server.reply_next(marked(NEW[0]))
    report = propose_arms(store, "diary", backend_for(chat_server), ProposerConfig(n=1))
    assert [p.name for p in report.accepted] == ["proposed-5"]


def test_a_task_without_arms_gets_templates_from_its_description(
    store: Store, chat_server: ChatServer
) -> None:
    with store.session() as s:
        get_or_create_task(s, "fresh", description="short poems", input_fields=["topic"])
    chat_server.reply_next(marked("Write a short poem about {topic}."))
    report = propose_arms(store, "fresh", backend_for(chat_server), ProposerConfig(n=1))
    assert report.ok and report.parent is None
    arm = arms_by_name(store)["proposed-1"]
    assert arm.parent_id is None and arm.created_by == "proposer"
    prompt = chat_server.chat_requests[0].messages[-1]["content"]
    assert "short poems" in prompt and "{topic}" in prompt
    assert "The current best template" not in prompt


def test_an_unknown_task_is_not_found(store: Store, chat_server: ChatServer) -> None:
    with pytest.raises(NotFoundError, match="no task named 'nope'"):
        propose_arms(store, "nope", backend_for(chat_server))
    assert chat_server.chat_requests == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"max_llm_calls": 0}, "max_llm_calls"),
        ({"max_similarity": 0.0}, "max_similarity"),
        ({"max_similarity": 1.5}, "max_similarity"),
        ({"similarity": "cosine"}, "similarity must be"),
        ({"n_best_examples": -1}, "examples"),
        ({"name_prefix": "bad name"}, "name_prefix"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ProposerConfig(**kwargs)  # type: ignore[arg-type]


# -- the parts ------------------------------------------------------------------------------
def test_token_jaccard_by_hand() -> None:
    assert token_jaccard("a b c", "a b d") == pytest.approx(2 / 4)
    assert token_jaccard("Write  about {place}", "write about {place}") == 1.0
    assert token_jaccard("about {place}", "about place") == pytest.approx(1 / 3)
    assert token_jaccard("x", "y") == 0.0


def test_char_ngram_cosine_by_hand() -> None:
    # "abab": ab×2, ba×1; "abba": ab, bb, ba → (2·1 + 1·1) / (√5 · √3)
    assert char_ngram_cosine("abab", "abba", n=2) == pytest.approx(3 / math.sqrt(15))
    assert char_ngram_cosine("Same text", "same   text") == pytest.approx(1.0)
    assert char_ngram_cosine("aaaa", "bbbb") == 0.0


def test_the_similarity_measure_and_threshold_are_configurable(
    store: Store, chat_server: ChatServer
) -> None:
    seed_task(store)
    reworded = NEW[0].replace("vivid", "lively")
    chat_server.reply_next(marked(NEW[0], reworded))
    strict = ProposerConfig(n=2, max_llm_calls=1, similarity="char_ngram_cosine")
    report = propose_arms(store, "diary", backend_for(chat_server), strict)
    assert len(report.accepted) == 1
    assert report.rejected[0].reason.startswith("near-duplicate of proposed template 1 (char_")

    chat_server.reply_next(marked(NEW[1], NEW[1].replace("small", "tiny")))
    lax = ProposerConfig(n=2, max_llm_calls=1, max_similarity=1.0, dry_run=True)
    assert len(propose_arms(store, "diary", backend_for(chat_server), lax).accepted) == 2


def test_parse_templates_reads_markers_with_attributes_and_flags_cut_answers() -> None:
    parsed = parse_templates('<PROMPT score="1">one {x}</PROMPT> text <prompt>two</prompt>')
    assert parsed.templates == ["one {x}", "two"] and parsed.problems == []
    cut = parse_templates("<PROMPT>one</PROMPT>\n<PROMPT>two is cut")
    assert cut.templates == ["one"] and "closing" in cut.problems[0]
    assert "length limit" not in cut.problems[0], "no hint unless the backend said 'length'"
    at_limit = parse_templates("<PROMPT>one</PROMPT>\n<PROMPT>two is cut", cut_off=True)
    assert "length limit" in at_limit.problems[0]
    empty = parse_templates("<PROMPT>  </PROMPT>")
    assert empty.templates == [] and "empty" in empty.problems[0]
    assert parse_templates('["a {x}", "b {x}"]').templates == ["a {x}", "b {x}"]
    assert parse_templates("nothing").templates == []


def test_each_llm_call_gets_its_own_seed_derived_from_the_given_one(
    store: Store, chat_server: ChatServer
) -> None:
    """The issue's case: with --seed every call used the same seed, and a server that honours
    seeds gave the same answer again."""
    from prefloop.llm import GenerationParams

    seed_task(store)
    chat_server.reply_next("no markers", "still none", marked(NEW[0]))
    config = ProposerConfig(n=1, max_llm_calls=3, params=GenerationParams(max_tokens=800, seed=7))
    report = propose_arms(store, "diary", backend_for(chat_server), config)
    assert report.llm_calls == 3
    assert [r.body.get("seed") for r in chat_server.chat_requests] == [7, 8, 9]
