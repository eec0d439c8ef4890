import torch

from alignment.core.generation import SamplingSettings, generate, generate_texts, response_mask_from_ids
from alignment.core.models import load_causal_lm, load_tokenizer


def test_response_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 0, 7, 0], [5, 6, 7, 8], [0, 3, 3, 3]])
    mask, ended = response_mask_from_ids(ids, eos_token_id=0)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_generate_left_pads_and_masks(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir), tokenizer)
    batch = generate(
        model,
        tokenizer,
        ["the movie", "a dull film with a terrible plot"],
        SamplingSettings(max_new_tokens=6),
    )
    assert batch.query_ids[0, 0].item() == tokenizer.pad_token_id  # the short prompt is left-padded
    assert batch.query_mask[0, 0].item() == 0 and batch.query_mask[1].all()
    assert batch.response_ids.shape == batch.response_mask.shape
    assert (batch.response_ids[batch.response_mask == 0] == tokenizer.pad_token_id).all()
    assert len(batch.response_texts) == 2
    assert tokenizer.padding_side == "right"  # restored


def test_generate_texts_is_repeatable_with_a_seed(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir), tokenizer)
    prompts = ["the movie", "i loved", "boring"]
    settings = SamplingSettings(max_new_tokens=5, temperature=1.0)
    first = generate_texts(model, tokenizer, prompts, settings, batch_size=2, seed=3)
    second = generate_texts(model, tokenizer, prompts, settings, batch_size=2, seed=3)
    assert first == second


def test_sampling_pass_logprobs_match_a_separate_forward(tiny_model_dir, tiny_llama_dir):
    # The fast path PPO takes for old log-probs: from the logits of generation itself (KV cache, left
    # padding), against a full forward pass over the finished sequences at the same temperature.
    from alignment.core.tokens import response_logprobs

    for folder in (tiny_model_dir, tiny_llama_dir):
        tokenizer = load_tokenizer(str(folder))
        model = load_causal_lm(str(folder), tokenizer).eval()
        torch.manual_seed(0)
        for temperature, min_new in ((1.0, 0), (0.7, 4)):
            settings = SamplingSettings(max_new_tokens=8, temperature=temperature, min_new_tokens=min_new)
            batch = generate(
                model,
                tokenizer,
                ["the movie", "a dull film with a plot", "i"],
                settings,
                return_logprobs=True,
            )
            full = response_logprobs(
                model, batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask, temperature
            )
            mask = batch.response_mask.bool()
            torch.testing.assert_close(batch.logprobs[mask], full[mask], atol=1e-4, rtol=1e-4)
            assert batch.logprobs.shape == batch.response_ids.shape
