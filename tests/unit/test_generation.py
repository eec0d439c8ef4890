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
