"""Robust RL against observation attacks, with an adaptive defense.

Attacks inside an l-infinity ball (:mod:`.attacks`), training learned
attackers (:mod:`.attacker_training`), payoff matrices and the
non-domination filter (:mod:`.payoff`), iterative discovery of non-dominated
policies trained on the surrogate (:mod:`.discovery`), and test-time selection
among them with adversarial bandits (:mod:`.bandits`). The ``robust`` stage
(:mod:`.stage`, run by ``sindyrl run`` and ``sindyrl robust``) runs it all on a run directory.
"""

from .adaptation import AdaptationResult, evaluate_adaptation, plot_regret, regret_exponent
from .attacker_training import AttackerEnv, imitate_attack, train_attacker
from .attacks import (
    Attack,
    Ball,
    CriticAttack,
    LearnedAttack,
    MADAttack,
    NoAttack,
    ObservationAttack,
    RandomAttack,
    VecObservationAttack,
    observation_scale,
)
from .bandits import (
    EXP3IX,
    EXP3S,
    Bandit,
    DiscountedEXP3IX,
    PolicySelector,
    make_bandit,
    normalise_returns,
    play,
    regret_curve,
    returns_table,
    switching_schedule,
)
from .discovery import DiscoveryResult, clone_agent, discover, random_policy, train_against
from .payoff import PayoffMatrix, dominated_by, episode_returns, evaluate_payoff, non_dominated
from .victims import Victim, as_victim

__all__ = [
    "Attack", "AttackerEnv", "Ball", "CriticAttack", "LearnedAttack", "MADAttack", "NoAttack",
    "ObservationAttack", "RandomAttack", "VecObservationAttack", "observation_scale", "train_attacker",
    "imitate_attack", "AdaptationResult", "evaluate_adaptation", "plot_regret", "regret_exponent",
    "EXP3IX", "EXP3S", "Bandit", "DiscountedEXP3IX", "PolicySelector", "make_bandit", "normalise_returns",
    "play", "regret_curve", "returns_table", "switching_schedule",
    "DiscoveryResult", "clone_agent", "discover", "random_policy", "train_against",
    "PayoffMatrix", "dominated_by", "episode_returns", "evaluate_payoff", "non_dominated",
    "Victim", "as_victim",
]
