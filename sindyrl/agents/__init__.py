"""Off-policy algorithm variants built on stable-baselines3 (drop-in SB3 models)."""

from sindyrl.agents.beer import BEER, bellman_cosine_bound, bellman_rank_penalty, critic_features, effective_rank

__all__ = ["BEER", "bellman_cosine_bound", "bellman_rank_penalty", "critic_features", "effective_rank"]
