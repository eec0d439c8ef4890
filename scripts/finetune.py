"""Fine-tuning (BERT, T5 and GPT classifiers): a thin entry point for `accelerate launch`.

Single process:
    .venv/bin/accelerate launch --config_file configs/accelerate/single.yaml scripts/finetune.py --config configs/finetune/minilm-sentiment.yaml
Two processes (DDP over gloo on CPU), ZeRO-2 or ZeRO-3:
    .venv/bin/accelerate launch --config_file configs/accelerate/ddp.yaml scripts/finetune.py --config configs/finetune/minilm-sentiment.yaml
    .venv/bin/accelerate launch --config_file configs/accelerate/zero3.yaml scripts/finetune.py --config configs/finetune/minilm-sentiment.yaml
Any config key can be overridden: `--max_train_samples 500 --peft lora`.
"""

from alignment.finetune.train import main

if __name__ == "__main__":
    main()
