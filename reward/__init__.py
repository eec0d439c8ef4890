"""Reward modeling: reward models, comparison data, the simulated labeler and the labeling app."""
