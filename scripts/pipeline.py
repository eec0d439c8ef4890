"""Run the whole loop (prepare, pretrain, sft, reward, ppo, evaluate), each stage as its own process.

    python scripts/pipeline.py --config configs/pipeline/tiny-sentiment.yaml
    alignment pipeline --config configs/pipeline/tiny-sentiment.yaml --redo ppo
Stages that need several processes are launched by the pipeline itself with `accelerate launch` when the
pipeline config names an accelerate config for them (`accelerate: {ppo: configs/accelerate/ddp.yaml}`);
do not launch this script with accelerate.
"""

from alignment.pipeline import main

if __name__ == "__main__":
    main()
