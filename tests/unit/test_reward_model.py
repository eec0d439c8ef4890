"""Reward models: the score is read at the last real token whatever the padding; pad-token start-up checks."""

import pytest
import torch

from alignment.core.models import ModelLoadError
from reward.model import (
    build_reward_model,
    check_pad_token,
    check_score_position,
    encode_texts,
    load_reward_model,
    pad_batch,
    score_texts,
)

TEXTS = ["the movie was wonderful", "a dull film with a terrible plot and bad acting", "boring"]


@pytest.fixture(scope="module")
def gpt2_rm(tiny_model_dir):
    torch.manual_seed(0)
    return build_reward_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def llama_rm(tiny_llama_dir):
    torch.manual_seed(0)
    return build_reward_model(str(tiny_llama_dir))


@pytest.mark.parametrize("which", ["gpt2_rm", "llama_rm"])
def test_score_is_the_same_with_left_and_right_padding(which, request):
    model, tokenizer = request.getfixturevalue(which)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    alone = torch.stack([score_texts(model, tokenizer, [t])[0] for t in TEXTS])
    for side in ("right", "left"):
        tokenizer.padding_side = side
        batched = score_texts(model, tokenizer, TEXTS)
        assert torch.allclose(alone, batched, atol=1e-5), side
        # more padding (a much longer text in the batch) changes nothing either
        padded_more = score_texts(model, tokenizer, [*TEXTS, " ".join(TEXTS * 3)])[:3]
        assert torch.allclose(alone, padded_more, atol=1e-5), side
    tokenizer.padding_side = "right"
    assert not torch.allclose(alone[0], alone[1])  # a constant model would pass the checks above trivially
    check_score_position(model, tokenizer)


def test_score_is_read_at_the_last_real_token(gpt2_rm):
    model, tokenizer = gpt2_rm
    text = "the movie was wonderful"
    ids = encode_texts(tokenizer, [text], 64, encoder=False)[0]
    assert ids == tokenizer(text)["input_ids"]  # no EOS appended: the last text token carries the score
    with_eos = encode_texts(tokenizer, [text + tokenizer.eos_token], 64, encoder=False)[0]
    assert with_eos == ids  # a policy sample ending in EOS scores like the same text without it
    batch = pad_batch([ids], tokenizer.pad_token_id)
    with torch.no_grad():
        hidden = model.transformer(input_ids=batch["input_ids"]).last_hidden_state  # [1, T, d]
        expected = model.score(hidden[0, -1])
    assert score_texts(model, tokenizer, [text])[0] == pytest.approx(expected.item(), abs=1e-5)


def test_left_padding_without_positions_would_shift_the_score(gpt2_rm):
    # Why pad_batch returns position_ids: GPT-2 numbers positions from the first (pad) column otherwise.
    model, tokenizer = gpt2_rm
    ids = encode_texts(tokenizer, TEXTS[:2], 64, encoder=False)
    batch = pad_batch(ids, tokenizer.pad_token_id, "left")
    with torch.no_grad():
        with_positions = model(**batch).logits[:, 0]
        batch.pop("position_ids")
        without = model(**batch).logits[:, 0]
    assert not torch.allclose(with_positions[0], without[0], atol=1e-4)


def test_pad_token_checks(gpt2_rm):
    model, tokenizer = gpt2_rm
    model.config.pad_token_id = tokenizer.eos_token_id
    with pytest.raises(ModelLoadError, match="config.pad_token_id"):
        check_pad_token(model, tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    with pytest.raises(ModelLoadError, match="pads with its EOS"):
        check_pad_token(model, tokenizer)
    tokenizer.pad_token = "<|pad|>"
    model.config.pad_token_id = tokenizer.pad_token_id
    check_pad_token(model, tokenizer)


def test_score_position_check_catches_a_wrong_pad_id(gpt2_rm):
    model, tokenizer = gpt2_rm
    model.config.pad_token_id = 7  # an ordinary token: the score would be read past the real text
    try:
        with pytest.raises(ModelLoadError, match="not read at the last real token"):
            check_score_position(model, tokenizer)
    finally:
        model.config.pad_token_id = tokenizer.pad_token_id


def test_build_sets_a_distinct_pad_token_when_the_backbone_pads_with_eos(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token  # the classic GPT-2 set-up
    folder = tmp_path / "eos-pad"
    tokenizer.save_pretrained(folder)
    model, fixed = build_reward_model(str(tiny_model_dir), tokenizer=str(folder))
    assert fixed.pad_token_id != fixed.eos_token_id == model.config.eos_token_id
    assert model.config.pad_token_id == fixed.pad_token_id


def test_save_and_load_round_trip(tmp_path, gpt2_rm):
    model, tokenizer = gpt2_rm
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_reward_model(str(tmp_path))
    assert not loaded.training and loaded_tokenizer.chat_template
    assert torch.allclose(score_texts(model, tokenizer, TEXTS), score_texts(loaded, loaded_tokenizer, TEXTS))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_reward_model(str(tmp_path / "missing"))


def test_encoder_backbone_scores_the_pooled_cls(tmp_path, sentences):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for s in sentences for w in s.split()})
    (tmp_path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"
    )
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    model, rm_tokenizer = build_reward_model(str(tmp_path / "bert"))
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.num_labels == 1
    rm_tokenizer.padding_side = "left"  # ignored for encoders: [CLS] must stay first
    alone = torch.stack([score_texts(model, rm_tokenizer, [t])[0] for t in TEXTS])
    assert torch.allclose(alone, score_texts(model, rm_tokenizer, TEXTS), atol=1e-5)
    check_score_position(model, rm_tokenizer)


@pytest.mark.parametrize("which", ["gpt2_rm", "llama_rm"])
def test_scoring_generated_ids_equals_scoring_the_decoded_text(which, request):
    # PPO's fast path: a reward model with the policy's tokenizer reads the rollout's ids directly (left-padded
    # queries, right-padded responses ending in EOS). It must score exactly what decoding the text and
    # re-encoding it would. Responses start with a space, so the ids split at the same place either way.
    from reward.model import score_token_ids, sequences_from_rollout_ids

    model, tokenizer = request.getfixturevalue(which)
    prompts = ["the movie was", "a dull film", "i loved every minute", "sad"]
    responses = [" wonderful", " with a terrible plot", "", " news came"]
    plain = {"add_special_tokens": False}
    queries = [tokenizer(p, **plain)["input_ids"] for p in prompts]
    answers = [tokenizer(r, **plain)["input_ids"] + [tokenizer.eos_token_id] for r in responses]
    q_len, r_len = max(map(len, queries)), max(map(len, answers)) + 1
    pad = tokenizer.pad_token_id
    query_ids = torch.tensor([[pad] * (q_len - len(q)) + q for q in queries])
    query_mask = torch.tensor([[0] * (q_len - len(q)) + [1] * len(q) for q in queries])
    response_ids = torch.tensor([a + [pad] * (r_len - len(a)) for a in answers])
    response_mask = torch.tensor([[1] * len(a) + [0] * (r_len - len(a)) for a in answers])
    sequences = sequences_from_rollout_ids(tokenizer, query_ids, query_mask, response_ids, response_mask, 64)
    texts = [p + r for p, r in zip(prompts, responses)]
    assert sequences == encode_texts(tokenizer, texts, 64, encoder=False)
    torch.testing.assert_close(
        score_token_ids(model, tokenizer, sequences),
        score_texts(model, tokenizer, texts),
        atol=1e-5,
        rtol=1e-5,
    )
