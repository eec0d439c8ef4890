"""Iterated RLHF: rounds of sample -> label -> retrain the reward model -> PPO -> evaluate."""
