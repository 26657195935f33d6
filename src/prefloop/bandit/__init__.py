"""Bandit policies over a task's arms: choose a prompt per request, learn from its rewards.

Policies (``make_policy(name, arms=…, scale=…, seed=…)``; names in :data:`POLICIES`):

================ ===========================================================================
default          prefloop's best: multinomial Thompson sampling on a Jeffreys Dirichlet(½) prior,
                 ε-exploring (ε = ¼, Jin et al. 2023) with optimistic draws (May et al. 2012)
                 and IMED's overdue test as a safety net (Honda & Takemura 2015, margin 2)
thompson         multinomial Thompson sampling (Riou & Honda 2020), Jeffreys prior
ucb1             UCB1 on rewards mapped to [0, 1] (Auer et al. 2002)
ucb1-reference   the reference project's UCB1 exactly: raw [-1, 1] rewards, sqrt(2 ln t / n)
epsilon-greedy   ε-greedy, ε = 0.1
softmax          Boltzmann exploration, τ = 0.1 on [0, 1] rewards
linucb           LinUCB with disjoint models on hashed context (and end-user) features
================ ===========================================================================

Every policy logs the propensity of its choice, takes late, missing and changed rewards, lets
arms come and go, can forget old rewards (``discount``) and keep end users on their arm
(``sticky``). Its state is JSON sufficient statistics equal to :func:`recompute` from the log.
:mod:`prefloop.bandit.online` binds policies to the store (:func:`decide`, :func:`apply_reward`;
:func:`check_state` compares a stored state with the log, :func:`rebuild_state` repairs it);
:func:`simulate` compares them on a spec of reward distributions; :func:`evaluate_offline`
estimates a new policy from logged decisions (IPS, self-normalised IPS, doubly robust).
"""

from prefloop.bandit._base import Decision, DecisionEvent, Policy, PolicyConfig
from prefloop.bandit._greedy import EpsilonGreedyConfig, SoftmaxConfig
from prefloop.bandit._identify import Recommendation
from prefloop.bandit._linucb import LinUCBConfig
from prefloop.bandit._offline import LoggedDecision, OffPolicyEstimate, evaluate_offline
from prefloop.bandit._registry import (
    POLICIES,
    make_policy,
    policy_config,
    policy_from_state,
    recompute,
    state_differences,
)
from prefloop.bandit._simulate import (
    ArmSpec,
    SimulationResult,
    SimulationSpec,
    SimulationSummary,
    load_spec,
    parse_spec,
    plot_regret,
    simulate,
    simulation_policies,
)
from prefloop.bandit._thompson import ThompsonConfig
from prefloop.bandit._ucb import ReferenceUCB1Config, UCB1Config
from prefloop.bandit.online import (
    ArmStats,
    StateCheck,
    TaskStats,
    apply_reward,
    arm_stats,
    check_state,
    decide,
    logged_decisions,
    rebuild_state,
    recommend_arm,
)

__all__ = [
    "POLICIES",
    "ArmSpec",
    "ArmStats",
    "Decision",
    "DecisionEvent",
    "EpsilonGreedyConfig",
    "LinUCBConfig",
    "LoggedDecision",
    "OffPolicyEstimate",
    "Policy",
    "PolicyConfig",
    "Recommendation",
    "ReferenceUCB1Config",
    "SimulationResult",
    "SimulationSpec",
    "SimulationSummary",
    "SoftmaxConfig",
    "StateCheck",
    "TaskStats",
    "ThompsonConfig",
    "UCB1Config",
    "apply_reward",
    "arm_stats",
    "check_state",
    "decide",
    "evaluate_offline",
    "load_spec",
    "logged_decisions",
    "make_policy",
    "parse_spec",
    "plot_regret",
    "policy_config",
    "policy_from_state",
    "rebuild_state",
    "recommend_arm",
    "recompute",
    "simulate",
    "simulation_policies",
    "state_differences",
]
