"""Model arms: an arm whose ``model_ref`` is a model folder, served on this machine.

A model arm's ``model_ref`` is one of

* the ``--out`` folder of ``prefloop train``: a LoRA adapter (peft's files, the tokenizer and
  ``prefloop-train.json`` naming its base) or a whole trained model;
* any Hugging Face causal-LM folder (``config.json`` with a ``*ForCausalLM`` architecture);
* ``smollm2``: the packaged SmolLM2-135M-Instruct.

:class:`ModelArms` serves them: each base model is loaded once, every adapter trained on it is
loaded onto that one copy (peft ``load_adapter``), and each batch switches to its arm's adapter
(``set_adapter``) or, for the base itself, runs with the adapters disabled. Generation is
serialised per base, so two arms never switch the adapter under each other.

:func:`add_model_arm` checks a folder and stores a model arm with the template that turns the
task's input into the model's user message (:func:`default_model_template` when none is given).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from prefloop.errors import InvalidInputError
from prefloop.llm._cache import SMOLLM2_NAME, smollm2_gguf
from prefloop.llm._local import LocalChatBackend
from prefloop.llm.base import Completion, GenerationParams, LLMError, Message
from prefloop.store.models import Arm, Task
from prefloop.store.repo import active_arms, create_arm

PACKAGED = "smollm2"
"""The ``model_ref`` of the packaged SmolLM2-135M-Instruct."""

_MANIFEST = "prefloop-train.json"  # prefloop.train.models.MANIFEST (not imported: heavy package)


def check_model_folder(model_ref: str | Path) -> str:
    """The ``model_ref`` a model arm stores for ``model_ref``: ``smollm2``, or the absolute path of
    a folder that holds a trained model, an adapter whose base is still there, or a Hugging Face
    causal LM, with a tokenizer that has a chat template. Only files are read (nothing loads).

    Raises :class:`InvalidInputError` naming what is missing and what to give instead.
    """
    if str(model_ref) == PACKAGED:
        return PACKAGED
    if not str(model_ref).strip():
        raise InvalidInputError(
            "the model folder is empty; give the --out folder of `prefloop train`, a Hugging "
            f"Face causal-LM folder, or {PACKAGED!r} for the packaged SmolLM2"
        )
    folder = Path(model_ref).expanduser()
    if not folder.is_dir():
        raise InvalidInputError(
            f"model folder {str(folder)!r} does not exist; give the --out folder of `prefloop "
            f"train`, a Hugging Face causal-LM folder, or {PACKAGED!r} for the packaged SmolLM2"
        )
    folder = folder.resolve()
    if (folder / _MANIFEST).exists():
        from prefloop.train.models import read_manifest, resolve_base

        manifest = read_manifest(folder)
        if manifest.adapter:
            if not (folder / "adapter_config.json").exists():
                raise InvalidInputError(
                    f"{folder} says it holds an adapter but has no adapter_config.json; give "
                    "the complete --out folder of `prefloop train`"
                )
            if manifest.base == PACKAGED:  # present, without converting it here (~30 s)
                smollm2_gguf()
            else:
                resolve_base(manifest.base)  # the base it was trained on must still be there
        elif not (folder / "config.json").exists():
            raise InvalidInputError(
                f"{folder} says it holds a whole model but has no config.json; give the "
                "complete --out folder of `prefloop train`"
            )
        _check_chat_template(_tokenizer_folder(folder))
        return str(folder)
    if not (folder / "config.json").exists():
        raise InvalidInputError(
            f"{folder} is not a model folder: it has neither {_MANIFEST} (a `prefloop train` "
            "output) nor config.json (a Hugging Face model); give the --out folder of "
            "`prefloop train` or a folder that save_pretrained wrote"
        )
    from prefloop.train.models import resolve_base

    resolve_base(folder)  # a causal LM, not e.g. a classifier
    _check_chat_template(folder)
    return str(folder)


def _tokenizer_folder(folder: Path) -> Path:
    """Where a trained folder's tokenizer is: its own, else its base's."""
    if (folder / "tokenizer_config.json").exists():
        return folder
    from prefloop.train.models import read_manifest, resolve_base

    return resolve_base(read_manifest(folder).base)


def _check_chat_template(folder: Path) -> None:
    if (folder / "chat_template.jinja").exists() or (folder / "chat_template.json").exists():
        return
    config = folder / "tokenizer_config.json"
    try:
        has_template = bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, json.JSONDecodeError):
        has_template = False
    if not has_template:
        raise InvalidInputError(
            f"the tokenizer in {folder} has no chat template, so a model arm cannot turn the "
            "task's input into a conversation; use an instruct model or save a tokenizer with "
            "tokenizer.chat_template set"
        )


def default_model_template(session: Session, task: Task) -> str:
    """The template a model arm gets when none is given.

    The template of the task's newest active prompt arm labelled ``production`` (the prompt its
    feedback, and so the trained model's data, mostly came from); without one, one line per
    input field (``place: {place}``). Raises :class:`InvalidInputError` when the task has
    neither.
    """
    production = [
        arm
        for arm in active_arms(session, task)
        if arm.kind == "prompt" and arm.template is not None and "production" in arm.labels
    ]
    if production:
        return str(production[-1].template)
    fields = [str(name) for name in task.input_fields or []]
    if not fields:
        raise InvalidInputError(
            f"task {task.name!r} has no production prompt arm and no input fields, so there is "
            "no default template for a model arm; give one with --template (e.g. '{question}')"
        )
    return "\n".join(f"{name}: {{{name}}}" for name in fields)


def check_arm_template(task: Task, template: str) -> str:
    """``template``, checked: well formed, and using only the task's input fields (if declared)."""
    from prefloop.llm.generate import template_fields

    if not template.strip():
        raise InvalidInputError("the template is empty; give the prompt text, e.g. 'About {place}'")
    names = template_fields(template)
    known = [str(name) for name in task.input_fields or []]
    unknown = [name for name in names if known and name not in known]
    if unknown:
        raise InvalidInputError(
            f"the template uses {', '.join('{' + n + '}' for n in unknown)}, which task "
            f"{task.name!r} does not have; its input fields are {', '.join(known)}"
        )
    return template


def add_model_arm(
    session: Session,
    task: Task,
    name: str,
    model_ref: str | Path,
    *,
    template: str | None = None,
    params: Mapping[str, Any] | None = None,
    labels: Sequence[str] = ("candidate",),
    parent: Arm | None = None,
    created_by: str = "human",
) -> Arm:
    """A new model arm of ``task`` served from ``model_ref`` (see :func:`check_model_folder`).

    ``template`` (default :func:`default_model_template`) is kept in ``params['template']``;
    ``params`` may also hold a ``system`` message and sampling overrides, as for prompt arms.
    Nothing is stored when the folder, the template or the name is refused.
    """
    ref = check_model_folder(model_ref)
    chosen = template if template is not None else default_model_template(session, task)
    check_arm_template(task, chosen)
    return create_arm(
        session,
        task,
        name,
        model_ref=ref,
        params={**dict(params or {}), "template": chosen},
        labels=labels,
        parent=parent,
        created_by=created_by,
    )


class _Base:
    """One base model in memory and the adapters loaded onto it (``arm0``, ``arm1`` …)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.adapters: dict[str, str] = {}  # adapter folder -> peft adapter name
        self.lock = threading.Lock()

    def add_adapter(self, folder: str) -> str:
        name = self.adapters.get(folder)
        if name is not None:
            return name
        name = f"arm{len(self.adapters)}"  # peft names become module keys: no dots or slashes
        if not self.adapters:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
        else:
            self.model.load_adapter(folder, adapter_name=name)
        self.model.eval()
        self.adapters[folder] = name
        return name

    @contextmanager
    def using(self, adapter: str | None) -> Iterator[Any]:
        """The model with ``adapter`` active (``None``: the base, adapters disabled), alone."""
        with self.lock:
            if not self.adapters:
                yield self.model
            elif adapter is None:
                with self.model.disable_adapter():
                    yield self.model
            else:
                self.model.set_adapter(adapter)
                yield self.model


class _ArmBackend:
    """The :class:`ChatBackend` of one model arm: its base (shared), its adapter, its tokenizer."""

    def __init__(
        self,
        *,
        name: str,
        base: _Base,
        adapter: str | None,
        tokenizer: Any,
        batch_size: int,
        num_threads: int | None,
    ) -> None:
        self.name = name
        self.base = base
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.num_threads = num_threads

    def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        result = self.complete_batch([messages], params)[0]
        if isinstance(result, LLMError):
            raise result
        return result

    def complete_batch(
        self, batch: Sequence[Sequence[Message]], params: GenerationParams
    ) -> list[Completion | LLMError]:
        with self.base.using(self.adapter) as model:
            local = LocalChatBackend(
                model=model,
                tokenizer=self.tokenizer,
                model_name=self.name,
                batch_size=self.batch_size,
                num_threads=self.num_threads,
            )
            results = local.complete_batch(batch, params)
        return [
            dataclasses.replace(r, model=self.name) if isinstance(r, Completion) else r
            for r in results
        ]


class ModelArms:
    """The model arms this process serves, each loaded on first use and kept.

    ``batch_size`` and ``num_threads`` default to ``PREFLOOP_LLM_LOCAL_BATCH_SIZE`` and
    ``PREFLOOP_LLM_LOCAL_THREADS``, as for the local backend. Keep one per process (the service
    and the demo do) so that models load once; :func:`~prefloop.llm.generate_batch` makes a
    short-lived one when given none.
    """

    def __init__(self, *, batch_size: int | None = None, num_threads: int | None = None) -> None:
        if batch_size is not None and batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        self._batch_size = batch_size
        self._num_threads = num_threads
        self._bases: dict[str, _Base] = {}  # base folder -> the model in memory
        self._backends: dict[str, _ArmBackend] = {}  # model_ref -> its backend
        self._lock = threading.Lock()

    @property
    def base_count(self) -> int:
        """How many base models are in memory."""
        return len(self._bases)

    def backend(self, model_ref: str) -> _ArmBackend:
        """The backend of the model arm whose ``model_ref`` this is (loads it the first time).

        Raises :class:`InvalidInputError` when the folder is gone or is not a model.
        """
        with self._lock:
            known = self._backends.get(model_ref)
            if known is None:
                known = self._load(check_model_folder(model_ref))
                self._backends[model_ref] = known
            return known

    def _settings(self) -> tuple[int, int | None]:
        if self._batch_size is None:
            from prefloop.llm.settings import load_local_settings

            settings = load_local_settings()
            self._batch_size = settings.batch_size
            self._num_threads = self._num_threads or settings.threads
        return self._batch_size, self._num_threads

    def _load(self, ref: str) -> _ArmBackend:
        from prefloop.train.models import (
            is_trained_folder,
            load_base,
            load_tokenizer,
            load_trained,
            read_manifest,
            resolve_base,
        )

        batch_size, num_threads = self._settings()
        folder = resolve_base(None if ref == PACKAGED else ref)
        name = f"local:{SMOLLM2_NAME if ref == PACKAGED else folder.name}"
        adapter: str | None = None
        try:
            if is_trained_folder(folder) and read_manifest(folder).adapter:
                base_folder = resolve_base(read_manifest(folder).base)
                if is_trained_folder(base_folder):  # an adapter on a trained model: alone
                    model, tokenizer, _ = load_trained(folder)
                    base = self._bases.setdefault(str(folder), _Base(model))
                else:
                    base = self._base(str(base_folder.resolve()), load_base)
                    adapter = base.add_adapter(str(folder))
                    tokenizer = load_tokenizer(_tokenizer_folder(folder))
            elif is_trained_folder(folder):  # a whole trained model
                base = self._base(str(folder), lambda f: load_trained(f)[:2])
                tokenizer = load_tokenizer(folder)
            else:
                base = self._base(str(folder.resolve()), load_base)
                tokenizer = load_tokenizer(folder)
        except (OSError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"cannot load the model arm {ref!r}: {exc}") from None
        return _ArmBackend(
            name=name,
            base=base,
            adapter=adapter,
            tokenizer=tokenizer,
            batch_size=batch_size,
            num_threads=num_threads,
        )

    def _base(self, key: str, load: Any) -> _Base:
        base = self._bases.get(key)
        if base is None:
            model, _tokenizer = load(key)
            model.eval()
            base = self._bases[key] = _Base(model)
        return base
