"""LLM backends behind one interface (:class:`ChatBackend`).

* :class:`OpenAIChatBackend` — any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp),
  configured by ``PREFLOOP_LLM_*`` (:class:`OpenAISettings`); retries with backoff.
* :class:`LocalChatBackend` — a transformers model on this machine, batched and seedable;
  :meth:`LocalChatBackend.smollm2` loads the packaged SmolLM2-135M-Instruct.
* :func:`make_backend` — either, by name, from the environment.
* :func:`generate_for_arm` / :func:`generate_batch` — render an arm's template, call a backend
  and store the generation (a failed call is stored as failed, with no reward). Prompt arms go
  to the given backend, model arms to their own model (:class:`ModelArms`).
* :func:`add_model_arm` — a trained model folder (or any causal-LM folder) becomes an arm.
"""

from typing import TYPE_CHECKING, Any

from prefloop.llm._arms import (
    ModelArms,
    add_model_arm,
    check_arm_template,
    check_model_folder,
)
from prefloop.llm._cache import cache_root, smollm2_folder
from prefloop.llm._factory import BACKEND_KINDS, make_backend
from prefloop.llm._local import LocalChatBackend
from prefloop.llm._retry import RetryPolicy
from prefloop.llm.base import (
    ChatBackend,
    Completion,
    GenerationParams,
    LLMError,
    LLMRateLimitError,
    LLMRequestError,
    LLMServerError,
    LLMTimeoutError,
    Message,
)
from prefloop.llm.generate import (
    GenerationRequest,
    generate_batch,
    generate_for_arm,
    render_template,
    template_fields,
)
from prefloop.llm.settings import LocalSettings, OpenAISettings

if TYPE_CHECKING:
    from prefloop.llm._openai import OpenAIChatBackend


def __getattr__(name: str) -> Any:
    # The openai client takes about a second to import: load it only when it is used.
    if name == "OpenAIChatBackend":
        from prefloop.llm._openai import OpenAIChatBackend

        return OpenAIChatBackend
    raise AttributeError(f"module 'prefloop.llm' has no attribute {name!r}")


__all__ = [
    "BACKEND_KINDS",
    "ChatBackend",
    "Completion",
    "GenerationParams",
    "GenerationRequest",
    "LLMError",
    "LLMRateLimitError",
    "LLMRequestError",
    "LLMServerError",
    "LLMTimeoutError",
    "LocalChatBackend",
    "LocalSettings",
    "Message",
    "ModelArms",
    "OpenAIChatBackend",
    "OpenAISettings",
    "RetryPolicy",
    "add_model_arm",
    "cache_root",
    "check_arm_template",
    "check_model_folder",
    "generate_batch",
    "generate_for_arm",
    "make_backend",
    "render_template",
    "smollm2_folder",
    "template_fields",
]
