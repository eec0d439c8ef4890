"""Pretrain a base model (tokenizer + causal LM, masked LM or span corruption) on a text corpus.

Single process:
    .venv/bin/accelerate launch --config_file configs/accelerate/single.yaml scripts/pretrain.py \
        --config configs/pretrain/tiny.yaml
DDP (2 processes) or DeepSpeed ZeRO-2/3: swap the accelerate config for ddp.yaml, zero2.yaml or zero3.yaml:
    .venv/bin/accelerate launch --config_file configs/accelerate/zero3.yaml scripts/pretrain.py \
        --config configs/pretrain/tiny.yaml --run_name zero3
Options: `python scripts/pretrain.py --help`.
"""

from alignment.pretrain.train import main

if __name__ == "__main__":
    main()
