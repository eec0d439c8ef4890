"""One tiny training step under whatever `accelerate launch` configured; writes `<out>/rank<N>.json` per rank.

Each rank writes its own file: lines printed by two processes to one stdout can interleave.

Used by test_launch.py to check that the shipped accelerate configs really start 2 processes on CPU
and that DDP, ZeRO-2 and ZeRO-3 all train.
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from alignment.core.launch import (
    accelerator_kwargs,
    exit_launched_process,
    fill_deepspeed_batch_sizes,
    prepare_cpu_distributed,
)
from alignment.core.models import build_causal_lm


def main() -> None:
    prepare_cpu_distributed()
    accelerator = Accelerator(**accelerator_kwargs())
    fill_deepspeed_batch_sizes(accelerator, micro_batch_size=2)
    torch.manual_seed(0)
    model = build_causal_lm("gpt2", vocab_size=64, n_layer=1, d_model=32, n_head=2, max_length=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(1 + accelerator.process_index)
    input_ids = torch.randint(0, 64, (2, 16), generator=generator).to(accelerator.device)
    losses = []
    for _ in range(3):  # the same batch three times: a real optimizer step must lower its loss
        loss = model(input_ids=input_ids, labels=input_ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    report = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "losses": losses,
    }
    Path(sys.argv[1], f"rank{accelerator.process_index}.json").write_text(json.dumps(report))
    exit_launched_process(0)


if __name__ == "__main__":
    main()
