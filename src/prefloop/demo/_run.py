"""``prefloop demo``: the whole loop on this machine, from a fresh store to a report.

1. Open the store (SQLite in the output folder unless a URL is given) and create the diary task
   with its hand-written prompt.
2. Warm-up: one batch of requests on the hand-written prompt, rated, so that the proposer has
   best and worst outputs to learn from.
3. The local LLM proposes candidate prompts (:func:`prefloop.propose.propose_arms`). When too
   few of its templates are usable, documented hand-written variants fill the gap, and the
   result says so.
4. Simulated requests in batches: random inputs, the bandit decides an arm per request, the LLM
   writes the batch, the rubric scorer rates each output (a RatingEvent from ``rubric-scorer``)
   and the rewards update the bandit. Everything is committed batch by batch, so an interrupted
   run keeps what it did; a failed LLM call is a failed generation with no reward.
5. A reward model is fitted on the collected ratings, with cross-validated figures next to the
   training-mean baseline.
6. The report: per-arm means with intervals, the recommended prompt and its confidence, regret
   against uniform allocation, plots and an HTML page.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prefloop.bandit import arm_stats, decide, policy_config, recommend_arm
from prefloop.demo._regret import cumulative_regret, uniform_regret
from prefloop.demo._report import write_report
from prefloop.demo._result import (
    ArmResult,
    DemoResult,
    Example,
    ProposalOutcome,
    RewardModelResult,
)
from prefloop.demo._reward import fit_reward_model
from prefloop.demo._rubric import RubricConfig, RubricScorer
from prefloop.demo._task import DIARY, DemoTask
from prefloop.demo._train import TrainedArmResult, compare_arms, local_base, train_model_arm
from prefloop.errors import InvalidInputError
from prefloop.feedback import RatingEvent
from prefloop.llm import (
    ChatBackend,
    GenerationParams,
    GenerationRequest,
    LocalChatBackend,
    ModelArms,
    generate_batch,
)
from prefloop.llm.base import LLMError, model_name
from prefloop.loop import submit_feedback
from prefloop.propose import ProposerConfig, propose_arms
from prefloop.reward import ProgressCallback
from prefloop.store import Store
from prefloop.store.models import Arm, BanditDecision, Feedback, Generation, Task
from prefloop.store.repo import (
    active_arms,
    add_generation,
    create_arm,
    get_arm,
    get_or_create_task,
    get_task,
)

__all__ = ["RUBRIC_AUTHOR", "DemoConfig", "run_demo"]

RUBRIC_AUTHOR = "rubric-scorer"
"""The author of the demo's ratings (source ``auto``): the rubric scorer, not a person."""
FALLBACK_CREATOR = "demo-fallback"
WARMUP_POLICY = "warm-up"
"""``Generation.policy`` of the warm-up outputs (no bandit decision behind them)."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run. The defaults finish in about five minutes on two CPU cores."""

    out_dir: Path = Path("prefloop-demo")
    """Folder for the store (unless ``database_url``), the reward model and the report."""
    database_url: str | None = None
    """Store URL; None means ``sqlite:///<out_dir>/prefloop.db``."""
    requests: int = 96
    """Simulated requests the bandit serves (after the warm-up)."""
    batch_size: int = 8
    """Requests decided, generated and rated together."""
    warmup: int = 8
    """Requests on the hand-written prompt before proposing (0: propose from the prompt only)."""
    backend: str = "local"
    """LLM backend when none is passed to :func:`run_demo`: ``local`` (SmolLM2-135M-Instruct, or
    ``PREFLOOP_LLM_LOCAL_MODEL``) or ``openai`` (``PREFLOOP_LLM_BASE_URL`` etc.)."""
    seed: int = 0
    """Seeds the inputs, the bandit's draws and the LLM's sampling."""
    policy: str = "default"
    """Bandit policy name (see ``prefloop bandit policies``)."""
    max_tokens: int = 100
    """New tokens per output."""
    temperature: float = 0.8
    top_p: float = 0.95
    candidates: int = 3
    """Candidate prompts next to the hand-written one."""
    propose: bool = True
    """Ask the LLM for the candidates; False uses the hand-written variants directly."""
    proposer_max_tokens: int = 256
    proposer_calls: int = 2
    threshold: float = 0.95
    """P(best) at which the recommendation counts as confident."""
    reward_model: str | None = "auto"
    """The reward model fitted at the end: ``auto`` (inner cross-validation chooses among
    prefloop's rating models), a ``REGRESSOR[:FEATURES]`` such as ``ridge:stats``, or None."""
    cv_folds: int = 5
    train: bool = False
    """After the requests, train a LoRA adapter (KTO) on the ratings, add it as a model arm and
    serve ``train_requests`` more requests (``prefloop demo --train``)."""
    train_steps: int = 24
    """Optimizer steps of that training (batches of 4 rated outputs)."""
    train_requests: int = 48
    """Requests served after the trained arm joins the bandit."""
    rubric: RubricConfig = field(default_factory=RubricConfig)
    task: DemoTask = DIARY

    def __post_init__(self) -> None:
        for name in ("requests", "batch_size", "max_tokens", "train_steps", "train_requests"):
            if getattr(self, name) < 1:
                raise InvalidInputError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.warmup < 0:
            raise InvalidInputError(f"warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.candidates <= len(self.task.fallback_prompts):
            raise InvalidInputError(
                f"candidates must be between 0 and {len(self.task.fallback_prompts)} (the "
                f"hand-written fallbacks available), got {self.candidates}"
            )
        if self.seed < 0:
            raise InvalidInputError(f"--seed must be >= 0, got {self.seed}")
        if self.reward_model not in (None, "auto"):
            from prefloop.reward.rating import parse_candidate

            parse_candidate(self.reward_model)  # a bad spec fails now, not after the run
        if self.cv_folds < 2:
            raise InvalidInputError(f"cv_folds must be >= 2, got {self.cv_folds}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise InvalidInputError(
                f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature} and "
                f"{self.top_p}"
            )
        policy_config(self.policy)  # an unknown --policy fails now and lists the known ones

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.out_dir / 'prefloop.db'}"

    def fast(self) -> DemoConfig:
        """A smaller run (about a third of the time): fewer requests, shorter outputs."""
        return replace(
            self,
            requests=min(self.requests, 40),
            warmup=min(self.warmup, 4),
            max_tokens=min(self.max_tokens, 72),
            proposer_max_tokens=200,
            proposer_calls=1,
        )


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started


def run_demo(
    config: DemoConfig | None = None,
    *,
    backend: ChatBackend | None = None,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Run the demo (module docstring) and write its report; returns what it measured.

    ``backend`` defaults to ``make_backend(config.backend)`` (SmolLM2-135M-Instruct on this
    machine unless configured otherwise); tests pass a tiny model's backend. ``progress`` is
    called as ``progress(phase, done, total)``; phases: load model, warm-up, propose,
    requests, (with ``train``) train and requests after training, reward model, report.
    """
    config = config or DemoConfig()
    report = progress or (lambda _phase, _done, _total: None)
    clock = _Clock()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    spec = config.task
    notes: list[str] = []

    store = Store.open(config.url)  # first: a bad URL fails before the model loads
    try:
        with store.session() as session:
            task = get_or_create_task(
                session,
                spec.name,
                description=spec.description,
                input_fields=spec.input_fields,
                rubric=spec.rubric,
            )
            existing = active_arms(session, task)
            if not existing:
                create_arm(
                    session,
                    task,
                    spec.base_prompt.name,
                    template=spec.base_prompt.template,
                    labels=("production",),
                    created_by="human",
                )
            scorer = RubricScorer(config.rubric, scale=task.scale)

        with clock.phase("load model"):
            report("load model", 0, 1)
            if backend is None:
                from prefloop.llm import make_backend

                backend = make_backend(config.backend)
            report("load model", 1, 1)
        if config.train:
            local_base(backend)  # --train needs the local model: say so now, not after the requests

        loop = _Loop(store, spec, scorer, backend, config, report)
        if len(existing) > 1:
            outcome = ProposalOutcome(reused=True)
            notes.append(
                f"the store at {config.url} already held task {spec.name!r} with "
                f"{len(existing)} arms; they were reused and this run's requests added"
            )
            caught_up = loop.catch_up()
            if caught_up:
                notes.append(f"rated {caught_up} output(s) an earlier, interrupted run left")
        else:
            with clock.phase("warm-up"):
                loop.warm_up()
            with clock.phase("propose"):
                outcome = loop.add_candidates()
        with clock.phase("requests"):
            loop.serve()
        trained = None
        if config.train:
            trained = _train_and_serve(store, spec.name, config, backend, loop, clock, report)
        with clock.phase("reward model"):
            report("reward model", 0, 1)
            model = (
                fit_reward_model(
                    store,
                    spec.name,
                    config.out_dir / "reward-model",
                    folds=config.cv_folds,
                    seed=config.seed,
                    model=config.reward_model,
                )
                if config.reward_model is not None
                else None
            )
            report("reward model", 1, 1)
        with clock.phase("report"):
            report("report", 0, 1)
            result = _summarise(store, spec, scorer, config, backend, outcome, model, loop)
            result.notes.extend(notes)
            if trained is not None:
                result.trained = compare_arms(store, spec.name, trained, config.seed)
            result.timings = dict(clock.timings)  # the page shows the steps before it
            result.files = write_report(result, config.out_dir)
            report("report", 1, 1)
        result.timings = dict(clock.timings)
        return result
    finally:
        store.close()


def _train_and_serve(
    store: Store,
    task: str,
    config: DemoConfig,
    backend: ChatBackend,
    loop: _Loop,
    clock: _Clock,
    report: ProgressCallback,
) -> TrainedArmResult:
    """``--train``: a KTO adapter on the ratings so far becomes an arm; more requests follow."""
    base = local_base(backend)  # the local backend, or a clear error
    assert isinstance(backend, LocalChatBackend)
    with clock.phase("train"):
        report("train", 0, 1)
        trained = train_model_arm(
            store,
            task,
            base,
            config.out_dir / "trained-arms",
            steps=config.train_steps,
            seed=config.seed,
            max_length=min(192, int(getattr(backend.model.config, "max_position_embeddings", 192))),
        )
        report("train", 1, 1)
    with clock.phase("requests after training"):
        loop.serve(config.train_requests, phase="requests after training")
    return trained


class _Loop:
    """The request loop: decide, generate, rate, reward — one batch per transaction."""

    def __init__(
        self,
        store: Store,
        spec: DemoTask,
        scorer: RubricScorer,
        backend: ChatBackend,
        config: DemoConfig,
        report: ProgressCallback,
    ) -> None:
        self.store = store
        self.spec = spec
        self.scorer = scorer
        self.backend = backend
        self.model_arms = ModelArms()
        """Serves the task's model arms (each model loads once for the whole run)."""
        self.config = config
        self.report = report
        self.rng = np.random.default_rng([config.seed, 1])
        self.batches = 0
        self.requests = 0
        self.generated = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.rated = 0

    def _params(self) -> GenerationParams:
        self.batches += 1
        return GenerationParams(
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=self.config.seed * 100_003 + self.batches,
        )

    def _batches(self, phase: str, total: int) -> Iterator[int]:
        """The sizes of the batches ``total`` requests come in; ``phase``'s bar moves after each."""
        self.report(phase, 0, total)
        done = 0
        while done < total:
            n = min(self.config.batch_size, total - done)
            yield n
            done += n
            self.report(phase, done, total)

    def warm_up(self) -> None:
        for n in self._batches("warm-up", self.config.warmup):
            inputs = self.spec.sample_inputs(n, self.rng)
            with self.store.session(readonly=True) as session:
                task = get_task(session, self.spec.name)
                base = get_arm(session, task, self.spec.base_prompt.name)
            requests = [GenerationRequest(base, x, policy=WARMUP_POLICY) for x in inputs]
            self._generate_and_rate(task, requests)

    def add_candidates(self) -> ProposalOutcome:
        want = self.config.candidates
        self.report("propose", 0, want)
        accepted: tuple[str, ...] = ()
        rejected: tuple[tuple[str, str], ...] = ()
        errors: tuple[str, ...] = ()
        calls = 0
        if self.config.propose and want:
            proposal = propose_arms(
                self.store,
                self.spec.name,
                self.backend,
                ProposerConfig(
                    n=want,
                    max_llm_calls=self.config.proposer_calls,
                    params=GenerationParams(
                        max_tokens=self.config.proposer_max_tokens,
                        temperature=0.9,
                        seed=self.config.seed,
                    ),
                ),
            )
            accepted = tuple(a.name for a in proposal.accepted if a.name is not None)
            rejected = tuple((r.template, r.reason) for r in proposal.rejected)
            errors = tuple(proposal.errors)
            calls = proposal.llm_calls
        fallbacks: list[str] = []
        missing = want - len(accepted)
        if missing > 0:
            with self.store.session() as session:
                task = get_task(session, self.spec.name)
                taken = {arm.name for arm in active_arms(session, task)}
                parent = get_arm(session, task, self.spec.base_prompt.name)
                for prompt in self.spec.fallback_prompts:
                    if len(fallbacks) == missing:
                        break
                    if prompt.name in taken:
                        continue
                    create_arm(
                        session,
                        task,
                        prompt.name,
                        template=prompt.template,
                        parent=parent,
                        created_by=FALLBACK_CREATOR,
                    )
                    fallbacks.append(prompt.name)
        self.report("propose", want, want)
        return ProposalOutcome(
            accepted=accepted,
            rejected=rejected,
            errors=errors,
            fallbacks=tuple(fallbacks),
            llm_calls=calls,
        )

    def serve(self, total: int | None = None, *, phase: str = "requests") -> None:
        for n in self._batches(phase, self.config.requests if total is None else total):
            inputs = self.spec.sample_inputs(n, self.rng)
            users = self.rng.integers(0, 50, size=n)
            with self.store.session() as session:
                task = get_task(session, self.spec.name)
                requests = []
                for x, user in zip(inputs, users, strict=True):
                    decision = decide(
                        session,
                        task,
                        policy=self.config.policy,
                        end_user=f"sim-user-{int(user):02d}",
                        context=x,
                        seed=self.config.seed,
                    )
                    arm = session.get(Arm, decision.arm_id)
                    assert arm is not None, "a decision names an arm of the task"
                    requests.append(GenerationRequest(arm, x, decision=decision))
            self._generate_and_rate(task, requests)
            self.requests += n

    def _generate_and_rate(self, task: Task, requests: list[GenerationRequest]) -> None:
        params = self._params()
        with self.store.session() as session:
            try:
                generations = generate_batch(
                    session, task, requests, self.backend, params, model_arms=self.model_arms
                )
            except LLMError as exc:  # the batch call itself broke: every request failed
                generations = _store_failures(session, task, requests, self.backend, exc)
        self.generated += sum(g.status == "ok" for g in generations)
        self.failed += sum(g.status != "ok" for g in generations)
        self.errors.update(g.error or "unknown error" for g in generations if g.status != "ok")
        self._rate(task, [g for g in generations if g.status == "ok"])

    def catch_up(self) -> int:
        """Rate the outputs an interrupted run stored but did not rate; returns how many."""
        with self.store.session(readonly=True) as session:
            task = get_task(session, self.spec.name)
            rated = select(Feedback.generation_id).where(
                Feedback.task_id == task.id, Feedback.author == RUBRIC_AUTHOR
            )
            pending = list(
                session.scalars(
                    select(Generation).where(
                        Generation.task_id == task.id,
                        Generation.status == "ok",
                        Generation.arm_id.is_not(None),
                        Generation.id.not_in(rated),
                    )
                )
            )
        self._rate(task, pending)
        return len(pending)

    def _rate(self, task: Task, generations: list[Generation]) -> None:
        """The rubric's rating of each output, recorded as feedback; rewards update the bandit."""
        with self.store.session() as session:
            for generation in generations:
                if generation.output is None:
                    continue
                verdict = self.scorer.score(generation.output, self.spec.facts(generation.input))
                submit_feedback(
                    session,
                    task,
                    RatingEvent(
                        generation_id=generation.id,
                        value=verdict.value,
                        source="auto",
                        author=RUBRIC_AUTHOR,
                        idempotency_key=f"{RUBRIC_AUTHOR}:{generation.id}",
                    ),
                )
                self.rated += 1


def _store_failures(
    session: Session,
    task: Task,
    requests: list[GenerationRequest],
    backend: ChatBackend,
    error: LLMError,
) -> list[Generation]:
    """Every request of a batch whose call as a whole raised: failed, with the error."""
    return [
        add_generation(
            session,
            task,
            arm_id=r.arm.id,
            input=dict(r.inputs),
            decision_id=r.decision.id if r.decision is not None else None,
            policy=r.decision.policy if r.decision is not None else None,
            propensity=r.decision.propensity if r.decision is not None else None,
            status="failed",
            error=f"{type(error).__name__}: {error}",
            model=model_name(backend),
        )
        for r in requests
    ]


def _summarise(
    store: Store,
    spec: DemoTask,
    scorer: RubricScorer,
    config: DemoConfig,
    backend: ChatBackend,
    outcome: ProposalOutcome,
    model: RewardModelResult | None,
    loop: _Loop,
) -> DemoResult:
    with store.session(readonly=True) as session:
        task = get_task(session, spec.name)
        stats = arm_stats(session, task, policy=config.policy, seed=config.seed)
        recommendation = recommend_arm(session, task, threshold=config.threshold, seed=config.seed)
        arms = {arm.id: arm for arm in session.scalars(select(Arm).where(Arm.task_id == task.id))}
        failed = dict(
            session.execute(
                select(Generation.arm_id, func.count())
                .where(Generation.task_id == task.id, Generation.status == "failed")
                .group_by(Generation.arm_id)
            ).all()
        )
        chosen_ids = session.scalars(
            select(BanditDecision.arm_id)
            .where(BanditDecision.task_id == task.id, BanditDecision.policy == config.policy)
            .order_by(BanditDecision.created_at, BanditDecision.id)
        ).all()
        examples = _examples(session, task, arms, spec, scorer)
    results = [
        ArmResult(
            name=s.arm,
            arm_id=s.arm_id,
            template=arms[s.arm_id].template or "",
            created_by=arms[s.arm_id].created_by,
            rated=s.count,
            failed=int(failed.get(s.arm_id, 0)),
            mean=s.mean_reward,
            interval=s.interval,
            raw_mean=s.raw_mean_reward,
            share=s.share,
            p_best=s.p_best,
        )
        for s in stats.arms
        if not s.retired
    ]
    means = {a.name: a.mean for a in results if a.mean is not None}
    chosen = [arms[i].name for i in chosen_ids]
    scored = [name for name in chosen if name in means]
    notes = []
    if len(scored) < len(chosen):
        notes.append(
            f"{len(chosen) - len(scored)} decision(s) chose arms without any rating; they are "
            "left out of the regret"
        )
    if loop.failed:
        errors = "; ".join(f"{e} (×{n})" for e, n in loop.errors.most_common(5))
        notes.append(f"{loop.failed} of {loop.requests} LLM calls failed: {errors}")
    rated_any = any(a.rated for a in results)
    if not rated_any:
        notes.append("no output was rated, so no prompt is recommended")
    curve = cumulative_regret(scored, means) if means else np.zeros(0)
    uniform = uniform_regret(len(scored), means) if means else np.zeros(0)
    return DemoResult(
        task=spec.name,
        database_url=store.url,
        out_dir=config.out_dir,
        policy=config.policy,
        model=backend.name,
        arms=results,
        chosen=chosen,
        recommended=recommendation.arm if rated_any else None,
        confidence=recommendation.probability,
        confident=recommendation.confident,
        threshold=config.threshold,
        regret_policy=float(curve[-1]) if len(curve) else 0.0,
        regret_uniform=float(uniform[-1]) if len(uniform) else 0.0,
        regret_curve=[float(v) for v in curve],
        uniform_curve=[float(v) for v in uniform],
        requests=loop.requests,
        generated=loop.generated,
        failed=loop.failed,
        rated=loop.rated,
        llm_errors=dict(loop.errors.most_common(5)),
        proposal=outcome,
        reward_model=model,
        examples=examples,
        notes=notes,
    )


def _examples(
    session: Session, task: Task, arms: dict[int, Arm], spec: DemoTask, scorer: RubricScorer
) -> list[Example]:
    """The best and the worst rated output of each active arm, with the rubric's reasons."""
    out: list[Example] = []
    for arm in sorted(arms.values(), key=lambda a: a.id):
        if arm.retired:
            continue
        rated = (
            select(Generation)
            .where(
                Generation.arm_id == arm.id,
                Generation.status == "ok",
                Generation.reward.is_not(None),
            )
            .limit(1)
        )
        best = session.scalar(rated.order_by(Generation.reward.desc(), Generation.created_at))
        worst = session.scalar(rated.order_by(Generation.reward.asc(), Generation.created_at))
        for generation in dict.fromkeys(g for g in (best, worst) if g is not None):
            assert generation.reward is not None, "the query selects rated generations"
            text = generation.output or ""
            verdict = scorer.score(text, spec.facts(generation.input))
            out.append(
                Example(
                    arm=arm.name,
                    inputs={k: str(v) for k, v in (generation.input or {}).items()},
                    output=text,
                    rating=float(generation.reward),
                    reasons=verdict.reasons,
                )
            )
    return out
