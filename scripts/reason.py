"""Reasoning and in-context evaluation: writes runs/<run_name>/reason/report.{json,md}, samples.jsonl, plots.

One process (generation is batched; nothing to shard):
    python scripts/reason.py --config configs/reason/smollm2.yaml
    accelerate launch --config_file configs/accelerate/single.yaml scripts/reason.py --config configs/reason/tiny.yaml
Any key can be overridden: `--models '{sft: runs/demo/sft/model, ppo: runs/demo/ppo/model}' --num_items 50`.
"""

from alignment.reason.run import main

if __name__ == "__main__":
    main()
