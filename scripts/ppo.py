"""Stage 3, PPO against a reward model with a KL penalty: a thin entry point for `accelerate launch`.

Single process:
    .venv/bin/accelerate launch --config_file configs/accelerate/single.yaml scripts/ppo.py --config configs/ppo/tiny.yaml
Two processes (DDP over gloo on CPU), ZeRO-2 or ZeRO-3 (ZeRO-3 shards policy, critic, reference and RM):
    .venv/bin/accelerate launch --config_file configs/accelerate/ddp.yaml scripts/ppo.py --config configs/ppo/tiny.yaml
    .venv/bin/accelerate launch --config_file configs/accelerate/zero3.yaml scripts/ppo.py --config configs/ppo/tiny.yaml
Any config key can be overridden: `--total_steps 20 --kl_coef 0.1`; `--resume true` continues a killed run.
"""

import sys
from pathlib import Path

# Python puts this file's folder first on sys.path, where scripts/reward.py would shadow the `reward` package
# that PPO loads its reward model from.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from alignment.ppo.trainer import main  # noqa: E402

if __name__ == "__main__":
    main()
