"""Stage 2: train a pairwise-preference reward model.

accelerate launch --config_file configs/accelerate/zero3.yaml scripts/reward.py --config configs/reward/tiny.yaml
accelerate launch --config_file configs/accelerate/ddp.yaml scripts/reward.py --config configs/reward/minilm.yaml
python scripts/reward.py --config configs/reward/tiny.yaml --max_steps 20
"""

import sys
from pathlib import Path

# Python puts this file's folder first on sys.path, where `reward.py` would shadow the `reward` package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from reward.train import main  # noqa: E402

if __name__ == "__main__":
    main()
