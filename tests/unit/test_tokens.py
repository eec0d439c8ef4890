"""The shared token arithmetic: log-probs from logits, positions from a mask, response log-probs, padding side."""

from __future__ import annotations

import math

import pytest
import torch

from alignment.core.tokens import (
    concat_query_response,
    padding_side,
    position_ids_from_mask,
    response_logprobs,
    response_slice,
    token_logprobs,
)


def test_token_logprobs_by_hand():
    logits = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))
    assert token_logprobs(logits, torch.tensor([[1, 0]]))[0].tolist() == pytest.approx(
        [math.log(0.75), math.log(0.5)]
    )
    # float32 softmax whatever the input dtype
    assert token_logprobs(logits.to(torch.bfloat16), torch.tensor([[1, 0]])).dtype == torch.float32


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


def test_response_slice_and_concat_line_up():
    query = torch.tensor([[0, 5, 6]])
    query_mask = torch.tensor([[0, 1, 1]])
    response = torch.tensor([[7, 8]])
    ids, mask, positions = concat_query_response(query, query_mask, response, torch.ones_like(response))
    assert ids.tolist() == [[0, 5, 6, 7, 8]] and positions.tolist() == [[0, 0, 1, 2, 3]]
    per_position = torch.arange(5).view(1, 5)
    # the outputs at positions 2 and 3 predict the two response tokens
    assert response_slice(per_position, 3, 2).tolist() == [[2, 3]]
    del mask


def test_response_logprobs_match_a_manual_forward(tiny_model_dir):
    from alignment.core.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir), tokenizer).eval()
    query = torch.tensor([[tokenizer.pad_token_id, 10, 11], [12, 13, 14]])
    query_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    response = torch.tensor([[20, 21], [22, 23]])
    got = response_logprobs(model, query, query_mask, response, torch.ones_like(response), temperature=2.0)
    # row 1 has no padding: an ordinary forward of its tokens gives the same numbers
    with torch.no_grad():
        logits = model(torch.tensor([[12, 13, 14, 22, 23]])).logits[0, 2:4] / 2.0
    expected = torch.log_softmax(logits, -1)[[0, 1], [22, 23]]
    torch.testing.assert_close(got[1], expected, rtol=1e-5, atol=1e-5)
    # row 0 is left-padded: positions start at its first real token, so it equals the unpadded row
    with torch.no_grad():
        logits = model(torch.tensor([[10, 11, 20, 21]])).logits[0, 1:3] / 2.0
    expected = torch.log_softmax(logits, -1)[[0, 1], [20, 21]]
    torch.testing.assert_close(got[0], expected, rtol=1e-5, atol=1e-5)


def test_padding_side_is_restored_even_on_error(tiny_tokenizer):
    tiny_tokenizer.padding_side = "right"
    with padding_side(tiny_tokenizer, "left"):
        assert tiny_tokenizer.padding_side == "left"
    with pytest.raises(RuntimeError), padding_side(tiny_tokenizer, "left"):
        raise RuntimeError
    assert tiny_tokenizer.padding_side == "right"


def test_fused_gelu_computes_what_gpt2s_own_gelu_does(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from alignment.core.models import fuse_activations

    original = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    fused = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    assert fuse_activations(fused) == 2 and fuse_activations(fused) == 0  # one per block; idempotent
    ids = torch.randint(3, 200, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids).logits, original(ids).logits, atol=1e-5, rtol=1e-5)
