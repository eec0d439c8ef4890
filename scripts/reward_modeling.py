"""Stage 2: train a pairwise-preference reward model.

accelerate launch --config_file configs/accelerate/zero3.yaml scripts/reward_modeling.py --config configs/reward/tiny.yaml
accelerate launch --config_file configs/accelerate/ddp.yaml scripts/reward_modeling.py --config configs/reward/minilm.yaml
python scripts/reward_modeling.py --config configs/reward/tiny.yaml --max_steps 20
"""

from reward.train import main

if __name__ == "__main__":
    main()
