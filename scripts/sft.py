"""Stage 1, supervised instruction tuning: a thin entry point for `accelerate launch`.

Single process:
    .venv/bin/accelerate launch --config_file configs/accelerate/single.yaml scripts/sft.py --config configs/sft/tiny.yaml
Two processes (DDP over gloo on CPU), ZeRO-2 or ZeRO-3:
    .venv/bin/accelerate launch --config_file configs/accelerate/ddp.yaml scripts/sft.py --config configs/sft/tiny.yaml
    .venv/bin/accelerate launch --config_file configs/accelerate/zero3.yaml scripts/sft.py --config configs/sft/tiny.yaml
Any config key can be overridden: `--max_steps 20 --peft lora`.
"""

from alignment.sft.train import main

if __name__ == "__main__":
    main()
