"""The local transformers backend on a tiny random model, and once on the real SmolLM2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prefloop.errors import InvalidInputError
from prefloop.llm import (
    ChatBackend,
    Completion,
    GenerationParams,
    LLMError,
    LLMRequestError,
    LocalChatBackend,
    make_backend,
    smollm2_folder,
)
from prefloop.llm._cache import cached_folder

PROMPTS = [
    "write about the sea",
    "a walk in the park with a friend today",
    "music",
    "the city at night was quiet and cold and I went to a cafe with my family",
    "happy",
]


def conversations(texts: list[str] = PROMPTS) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": text}] for text in texts]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LocalChatBackend:
    return LocalChatBackend.from_pretrained(tiny_model_dir, batch_size=4, num_threads=1)


def texts(results: list[Completion | LLMError]) -> list[str]:
    out = []
    for result in results:
        assert isinstance(result, Completion), result
        out.append(result.text)
    return out


def test_the_local_backend_is_a_chat_backend(tiny: LocalChatBackend) -> None:
    assert isinstance(tiny, ChatBackend)
    assert tiny.name == f"local:{tiny.model_name}"


def test_greedy_batched_generation_equals_one_at_a_time(tiny: LocalChatBackend) -> None:
    params = GenerationParams(max_tokens=12, temperature=0.0)
    batched = texts(tiny.complete_batch(conversations(), params))
    single = [tiny.complete(messages, params).text for messages in conversations()]
    assert batched == single
    assert len(set(batched)) > 1  # the prompts matter: not one constant text


def test_the_same_seed_gives_the_same_samples_and_another_seed_other_ones(
    tiny: LocalChatBackend,
) -> None:
    params = GenerationParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    first = texts(tiny.complete_batch(conversations(), params))
    again = texts(tiny.complete_batch(conversations(), params))
    other = texts(
        tiny.complete_batch(
            conversations(), GenerationParams(max_tokens=16, temperature=1.0, seed=8)
        )
    )
    assert first == again
    assert first != other


def test_seeding_leaves_the_global_random_state_alone(tiny: LocalChatBackend) -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny.complete(conversations()[0], GenerationParams(max_tokens=4, temperature=1.0, seed=1))
    assert torch.equal(torch.rand(3), expected)


def test_the_chat_template_is_applied_and_tokens_are_counted(tiny: LocalChatBackend) -> None:
    messages = [{"role": "system", "content": "be calm"}, {"role": "user", "content": "the sea"}]
    completion = tiny.complete(messages, GenerationParams(max_tokens=5, temperature=0.0))  # type: ignore[arg-type]
    expected = tiny.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert expected == (
        "<|im_start|> system be calm <|im_end|> <|im_start|> user the sea <|im_end|> "
        "<|im_start|> assistant "
    )
    prompt_ids = tiny.tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert completion.prompt_tokens == len(prompt_ids)
    assert completion.completion_tokens is not None and 1 <= completion.completion_tokens <= 5
    assert completion.latency_ms is not None and completion.latency_ms > 0
    assert completion.model == tiny.model_name


def test_max_tokens_bounds_the_output(tiny: LocalChatBackend) -> None:
    for max_tokens in (1, 3, 9):
        results = tiny.complete_batch(
            conversations(), GenerationParams(max_tokens=max_tokens, temperature=0.0)
        )
        for result in results:
            assert isinstance(result, Completion)
            assert result.completion_tokens is not None and result.completion_tokens <= max_tokens
            assert len(result.text.split()) <= max_tokens
            if result.completion_tokens == max_tokens:
                assert result.finish_reason == "length"


def test_a_stop_string_cuts_the_text_before_it_and_stops_generating(
    tiny: LocalChatBackend,
) -> None:
    params = GenerationParams(max_tokens=20, temperature=0.0)
    full = tiny.complete(conversations()[1], params)
    words = full.text.split()
    assert len(words) >= 6, f"the tiny model wrote too little to test stopping: {full.text!r}"
    stop = words[4]
    stopped = tiny.complete(
        conversations()[1], GenerationParams(max_tokens=20, temperature=0.0, stop=(stop,))
    )
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens is not None and full.completion_tokens is not None
    assert stopped.completion_tokens < full.completion_tokens  # it stopped, not just trimmed


def test_a_prompt_longer_than_the_context_fails_alone(tiny: LocalChatBackend) -> None:
    too_long = " ".join(["sea"] * 200)  # the tiny model has 128 positions
    results = tiny.complete_batch(
        conversations([PROMPTS[0], too_long, PROMPTS[2]]),
        GenerationParams(max_tokens=4, temperature=0),
    )
    assert isinstance(results[1], LLMRequestError)
    assert "context of 128 tokens" in str(results[1])
    assert isinstance(results[0], Completion) and isinstance(results[2], Completion)
    with pytest.raises(LLMRequestError):
        tiny.complete(conversations([too_long])[0], GenerationParams(max_tokens=4))


def test_num_threads_applies_only_while_generating(tiny_model_dir: Path) -> None:
    import torch

    backend = LocalChatBackend.from_pretrained(tiny_model_dir, num_threads=1)
    seen: list[int] = []
    hook = backend.model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        backend.complete(conversations()[0], GenerationParams(max_tokens=3, temperature=0))
    finally:
        hook.remove()
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    with pytest.raises(InvalidInputError, match="num_threads"):
        LocalChatBackend(model=backend.model, tokenizer=backend.tokenizer, num_threads=0)


def test_a_tokenizer_without_chat_template_is_refused(tiny_model_dir: Path) -> None:
    backend = LocalChatBackend.from_pretrained(tiny_model_dir)
    backend.tokenizer.chat_template = None
    with pytest.raises(InvalidInputError, match="no chat template"):
        backend.complete(conversations()[0], GenerationParams(max_tokens=2))


def test_a_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        LocalChatBackend.from_pretrained(tmp_path / "nowhere")


def test_make_backend_local_loads_the_folder_from_the_environment(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFLOOP_LLM_LOCAL_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("PREFLOOP_LLM_LOCAL_BATCH_SIZE", "3")
    backend = make_backend("local")
    assert isinstance(backend, LocalChatBackend) and backend.batch_size == 3


# -- the cache ------------------------------------------------------------------------------
def test_a_cached_folder_is_built_once(tmp_path: Path) -> None:
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"1234")

    first = cached_folder("thing", build, cache_dir=tmp_path)
    second = cached_folder("thing", build, cache_dir=tmp_path)
    assert first == second == tmp_path / "models" / "thing"
    assert len(calls) == 1 and calls[0] != first  # built elsewhere, then renamed
    assert (first / "weights.bin").read_bytes() == b"1234"


def test_a_failed_build_leaves_no_cache_behind(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"12")
        raise KeyboardInterrupt  # as if the user stopped the conversion

    with pytest.raises(KeyboardInterrupt):
        cached_folder("thing", broken, cache_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []

    built = cached_folder("thing", lambda f: (f / "ok.bin").write_bytes(b"x"), cache_dir=tmp_path)
    assert sorted(p.name for p in built.iterdir() if not p.name.startswith(".")) == ["ok.bin"]


def test_an_incomplete_folder_from_elsewhere_is_replaced(tmp_path: Path) -> None:
    partial = tmp_path / "models" / "thing"
    partial.mkdir(parents=True)
    (partial / "half.bin").write_bytes(b"12")
    built = cached_folder("thing", lambda f: (f / "ok.bin").write_bytes(b"x"), cache_dir=tmp_path)
    assert not (built / "half.bin").exists() and (built / "ok.bin").exists()


def test_the_cache_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefloop.llm import cache_root

    monkeypatch.setenv("PREFLOOP_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("PREFLOOP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "prefloop"


# -- the real model -------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_from_the_package_writes_a_sensible_english_sentence() -> None:
    folder = smollm2_folder()  # converted once into the user cache, then reused
    assert (folder / "config.json").exists()
    # One torch thread: on a shared 2-core machine it is several times faster than two.
    backend = LocalChatBackend.smollm2(num_threads=1)
    completion = backend.complete(
        [{"role": "user", "content": "Write one short sentence about the sea."}],
        GenerationParams(max_tokens=40, temperature=0.0),
    )
    words = re.findall(r"[A-Za-z']+", completion.text)
    assert len(words) >= 4, completion.text
    assert sum(ch.isascii() for ch in completion.text) / len(completion.text) > 0.95
    common = {"the", "a", "is", "of", "and", "sea", "ocean", "waves", "its", "with"}
    assert common & {w.lower() for w in words}, completion.text
    assert completion.completion_tokens is not None and completion.completion_tokens <= 40
