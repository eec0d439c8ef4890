"""Evaluate aligned checkpoints and write runs/<run_name>/evaluate/report.{json,md} with plots.

Evaluation runs in one process (the models are small enough; nothing to shard):
    python scripts/evaluate.py --config configs/evaluate/tiny.yaml
    accelerate launch --config_file configs/accelerate/single.yaml scripts/evaluate.py --config configs/evaluate/tiny.yaml
Any key can be overridden: `--models '{sft: runs/demo/sft/model, ppo: runs/demo/ppo/model}' --max_prompts 64`.
"""

from alignment.evaluate.run import main

if __name__ == "__main__":
    main()
