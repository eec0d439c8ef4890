"""Stage 3, PPO against a reward model with a KL penalty: a thin entry point for `accelerate launch`.

Single process:
    .venv/bin/accelerate launch --config_file configs/accelerate/single.yaml scripts/ppo.py --config configs/ppo/tiny.yaml
Two processes (DDP over gloo on CPU), ZeRO-2 or ZeRO-3 (ZeRO-3 shards policy, critic, reference and RM):
    .venv/bin/accelerate launch --config_file configs/accelerate/ddp.yaml scripts/ppo.py --config configs/ppo/tiny.yaml
    .venv/bin/accelerate launch --config_file configs/accelerate/zero3.yaml scripts/ppo.py --config configs/ppo/tiny.yaml
Any config key can be overridden: `--max_steps 20 --kl_coef 0.1`; a killed run continues from its last checkpoint when started again.
"""

from alignment.ppo.train import main

if __name__ == "__main__":
    main()
