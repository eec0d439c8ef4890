"""Packed (padding-free) PPO training forwards give the padded forward's losses and gradients."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from alignment.core.config import build_config
from alignment.ppo.config import Config
from alignment.ppo.packing import gather_positions, pack
from alignment.ppo.update import ppo_loss
from alignment.ppo.value import PolicyAndValue, critic_from_causal_lm


def test_pack_places_every_sequence_whole_with_positions_from_zero():
    sequences = [torch.tensor([5, 6, 7]), torch.tensor([8]), torch.tensor([9, 10])]
    packed = pack(sequences, pad_id=0, row_tokens=4)
    for index, tokens in enumerate(sequences):
        row, column = packed.starts[index]
        assert packed.input_ids[row, column : column + len(tokens)].tolist() == tokens.tolist()
        assert packed.position_ids[row, column : column + len(tokens)].tolist() == list(range(len(tokens)))
    assert packed.input_ids.shape[0] == 2  # 6 tokens, rows of at most 4
    values = torch.arange(packed.input_ids.numel()).view(packed.input_ids.shape).unsqueeze(-1).float()
    gathered = gather_positions(values, packed, [0, 2], torch.tensor([1, 0]), torch.tensor([2, 2]), 2)
    assert gathered[0, :, 0].tolist() == [
        packed.flat(0, torch.tensor(1)).item(),
        packed.flat(0, torch.tensor(2)).item(),
    ]


@pytest.mark.parametrize("with_ptx", [False, True])
@pytest.mark.parametrize("which", ["tiny_model_dir", "tiny_llama_dir"])
def test_packed_and_padded_losses_and_gradients_agree(which, with_ptx, request, tiny_tokenizer):
    from alignment.core.models import load_causal_lm

    folder = str(request.getfixturevalue(which))
    torch.manual_seed(0)
    model = PolicyAndValue(load_causal_lm(folder, tiny_tokenizer), critic=critic_from_causal_lm(folder))
    model.critic.head.weight.data.normal_()
    pad = tiny_tokenizer.pad_token_id
    # Left-padded queries, responses that end at different lengths (padding after EOS), as rollouts are laid out.
    query_ids = torch.tensor([[pad, pad, 10, 11], [12, 13, 14, 15], [pad, 16, 17, 18]])
    query_mask = (query_ids != pad).long()
    response_ids = torch.tensor([[20, 21, 22, 0, pad], [23, 0, pad, pad, pad], [24, 25, 26, 27, 28]])
    response_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    micro = {
        "query_ids": query_ids,
        "query_mask": query_mask,
        "response_ids": response_ids,
        "response_mask": response_mask,
        "logprobs": torch.randn(3, 5) - 3,
        "values": torch.randn(3, 5),
        "advantages": torch.randn(3, 5),
        "returns": torch.randn(3, 5),
    }
    ptx = (torch.tensor([[30, 31, 32, 33], [34, 35, pad, pad]]), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    results = {}
    for packing in (False, True):
        config = build_config(
            Config,
            {
                "packing": packing,
                "reward_fn": "vader",
                "reward_model": None,
                "ptx_coef": 0.3,
                "ptx_data": "x",
            },
        )
        cpu = SimpleNamespace(device=torch.device("cpu"))
        session = SimpleNamespace(config=config, tokenizer=tiny_tokenizer, model=model, accelerator=cpu)
        model.zero_grad()
        loss, stats = ppo_loss(session, micro, ptx if with_ptx else None)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[packing] = (loss.detach(), stats, grads)
    (padded_loss, padded_stats, padded_grads), (packed_loss, packed_stats, packed_grads) = (
        results[False],
        results[True],
    )
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-5, rtol=1e-5)
    for key in ("policy_loss", "value_loss", "entropy", *(["ptx_loss"] if with_ptx else [])):
        torch.testing.assert_close(packed_stats[key], padded_stats[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed_grads, padded_grads, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_stays_close_to_fp32(tiny_tokenizer, tiny_model_dir):
    # precision: bf16 autocasts the forward; the losses are computed in fp32 from its outputs. On a tiny
    # GPT-2 the two agree to about 1% (bf16 keeps 8 bits of mantissa).
    from alignment.core.models import load_causal_lm

    torch.manual_seed(0)
    folder = str(tiny_model_dir)
    model = PolicyAndValue(load_causal_lm(folder, tiny_tokenizer), critic=critic_from_causal_lm(folder))
    model.critic.head.weight.data.normal_()
    ids = torch.randint(3, 300, (4, 6))
    micro = {
        "query_ids": ids[:, :3],
        "query_mask": torch.ones(4, 3, dtype=torch.long),
        "response_ids": ids[:, 3:],
        "response_mask": torch.ones(4, 3, dtype=torch.long),
        "logprobs": torch.randn(4, 3) - 5,
        "values": torch.randn(4, 3),
        "advantages": torch.randn(4, 3),
        "returns": torch.randn(4, 3),
    }
    losses = {}
    for precision in ("fp32", "bf16"):
        config = build_config(Config, {"precision": precision, "reward_fn": "vader", "reward_model": None})
        cpu = SimpleNamespace(device=torch.device("cpu"))
        session = SimpleNamespace(config=config, tokenizer=tiny_tokenizer, model=model, accelerator=cpu)
        loss, stats = ppo_loss(session, micro, None)
        assert loss.dtype == torch.float32
        losses[precision] = (loss.item(), stats["value_loss"].item())
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=0.02, abs=0.02)
    assert losses["bf16"][1] == pytest.approx(losses["fp32"][1], rel=0.02, abs=0.02)
