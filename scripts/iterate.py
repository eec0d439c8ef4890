"""Iterated RLHF rounds (sample, label, retrain the reward model, PPO, evaluate) after a pipeline run.

Each round's stages run as their own processes, so this script needs no `accelerate launch`:
    python scripts/iterate.py --config configs/iterate/tiny.yaml
"""

from alignment.iterate.run import main

if __name__ == "__main__":
    main()
