"""`generate_prefilled`: a shared prefix and each prompt prefilled once, N samples per prompt from one cache.

Greedy decoding must give exactly what plain batched generation gives, the forward passes must see each
token once (the point of the cache), and sampled rows come out prompt-major.
"""

import torch

from alignment.core.generation import SamplingSettings, generate, generate_prefilled
from alignment.core.models import load_causal_lm, load_tokenizer

PREFIX = "the movie was wonderful and the acting was great\n"
PROMPTS = [PREFIX + "a dull film", PREFIX + "i loved every minute of this", PREFIX + "the"]


def load(folder):
    tokenizer = load_tokenizer(str(folder), padding_side="left")
    return load_causal_lm(str(folder), tokenizer).eval(), tokenizer


def test_greedy_output_equals_plain_generation(tiny_model_dir, tiny_llama_dir):
    settings = SamplingSettings(max_new_tokens=6, temperature=0)
    for folder in (tiny_model_dir, tiny_llama_dir):
        model, tokenizer = load(folder)
        plain = generate(model, tokenizer, PROMPTS, settings)
        for prefix in ("", PREFIX):
            shared = generate_prefilled(model, tokenizer, PROMPTS, settings, shared_prefix=prefix)
            assert shared.response_texts == plain.response_texts, (folder, prefix)
            torch.testing.assert_close(shared.response_mask, plain.response_mask)


def test_every_prompt_token_is_run_once(tiny_llama_dir):
    model, tokenizer = load(tiny_llama_dir)
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    try:
        generate_prefilled(
            model,
            tokenizer,
            PROMPTS,
            # min_new_tokens: no row may end early and leave the batch, which would change the shapes counted
            SamplingSettings(max_new_tokens=3, temperature=1.0, min_new_tokens=3),
            4,
            PREFIX,
        )
    finally:
        hook.remove()
    prefix_len = len(tokenizer(PREFIX, add_special_tokens=False)["input_ids"])
    longest = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS)
    assert seen[0] == (1, prefix_len)  # the shared prefix, once
    assert seen[1] == (len(PROMPTS), longest - prefix_len)  # each prompt's remainder, once per prompt
    assert seen[2] == (len(PROMPTS) * 4, 1)  # then one token per row and step, for all N samples
    assert len(seen) == 4  # 3 new tokens: the first from the prefill, two more steps


def test_a_row_that_ends_leaves_the_batch_and_the_others_are_unchanged(tiny_model_dir):
    model, tokenizer = load(tiny_model_dir)
    settings = SamplingSettings(max_new_tokens=8, temperature=0)
    plain = generate(model, tokenizer, PROMPTS, settings)
    # A stop string that only the first row's continuation contains early ends that row after a few tokens.
    stop = next(
        plain.response_texts[0][:n]
        for n in range(2, 12)
        if all(plain.response_texts[0][:n] not in t for t in plain.response_texts[1:])
    )
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[0])
    )
    try:
        stopped = generate_prefilled(model, tokenizer, PROMPTS, settings, stop_strings=(stop,))
    finally:
        hook.remove()
    assert stopped.response_texts[1:] == plain.response_texts[1:]
    assert stop in stopped.response_texts[0] and len(stopped.response_texts[0]) < len(plain.response_texts[0])
    assert seen[-1] == len(PROMPTS) - 1  # the stopped row no longer runs
    assert int(stopped.response_mask[0].sum()) < 8


def test_samples_are_prompt_major_and_seeded(tiny_model_dir):
    model, tokenizer = load(tiny_model_dir)
    settings = SamplingSettings(max_new_tokens=5, temperature=1.0)
    torch.manual_seed(1)
    first = generate_prefilled(model, tokenizer, PROMPTS, settings, 3, PREFIX)
    torch.manual_seed(1)
    second = generate_prefilled(model, tokenizer, PROMPTS, settings, 3, PREFIX)
    assert first.response_texts == second.response_texts
    assert first.response_ids.shape[0] == 9
    for i in range(3):  # rows i*3 .. i*3+2 carry prompt i
        assert (first.query_ids[i * 3 : i * 3 + 3] == first.query_ids[i * 3]).all()
    greedy = generate_prefilled(
        model, tokenizer, PROMPTS, SamplingSettings(max_new_tokens=5, temperature=0), 2
    )
    assert greedy.response_texts[0] == greedy.response_texts[1]
