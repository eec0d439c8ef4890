"""The InstructGPT loop on accelerate and DeepSpeed: pretrain, SFT, reward model, PPO, evaluation."""

__version__ = "0.1.0"
