"""Evaluation metrics against hand-computed values, and the model-based measures on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from alignment.core.generation import SamplingSettings
from alignment.core.judges import judge_name, load_judge, vader_compound
from alignment.core.models import load_causal_lm, load_tokenizer
from alignment.evaluate import metrics
from alignment.evaluate.measure import sample_responses, sequence_kls, text_nll
from alignment.evaluate.report import compute_checks, curve_group, extract_curves


def test_distinct_n_hand_made():
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> 7 total, {a, b, c} unique
    assert metrics.distinct_n(texts, 1) == pytest.approx(3 / 7)
    # bigrams: (a b)(b a)(a b) + (a b)(b c) -> 5 total, {ab, ba, bc} unique; none across the text boundary
    assert metrics.distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert metrics.distinct_n(["same words", "same words"], 2) == pytest.approx(0.5)
    assert metrics.distinct_n(["one", ""], 2) == 0.0
    with pytest.raises(ValueError):
        metrics.distinct_n(texts, 0)


def test_win_rate_ties_count_half():
    assert metrics.win_rate([1.0, 0.0, 0.5], [0.0, 1.0, 0.5]) == pytest.approx(0.5)
    assert metrics.win_rate([2.0, 2.0, 2.0, 0.0], [1.0, 1.0, 2.0, 1.0]) == pytest.approx(2.5 / 4)
    scores = [0.1, -0.3, 0.7]
    assert metrics.win_rate(scores, scores) == 0.5
    assert math.isnan(metrics.win_rate([], []))
    with pytest.raises(ValueError):
        metrics.win_rate([1.0], [1.0, 2.0])


def test_sequence_kl_and_perplexity_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # row 0: 0.5 - 1.0 + 0 = -0.5; row 1: 0.5 + 0.5 (last token masked out)
    assert metrics.sequence_kl(logprobs, ref, mask).tolist() == pytest.approx([-0.5, 1.0])
    assert metrics.perplexity(2 * math.log(4.0), 2) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        metrics.perplexity(1.0, 0)


def test_judges():
    assert vader_compound("a wonderful, great, happy movie") > 0.5
    assert vader_compound("a terrible, awful, boring movie") < -0.5
    assert vader_compound("") == 0.0
    assert load_judge("vader") is vader_compound
    assert load_judge("alignment.core.judges:vader_compound") is vader_compound
    assert judge_name("alignment.core.judges:vader_compound") == "vader_compound"
    with pytest.raises(ValueError, match="no callable"):
        load_judge("alignment.core.judges:nope")
    with pytest.raises(ValueError, match="module:function"):
        load_judge("gpt4")


def test_curve_keys_are_grouped_tolerantly():
    assert curve_group("loss") == curve_group("train/loss") == curve_group("eval_loss") == "loss"
    assert curve_group("reward/mean") == curve_group("rewards/chosen") == "reward"
    assert curve_group("kl") == curve_group("objective/kl") == curve_group("kl_mean") == "kl"
    assert curve_group("eval_accuracy") == "accuracy"
    assert (
        curve_group("learning_rate") is None
        and curve_group("kl_coef") is None
        and curve_group("epoch") is None
    )
    curves = extract_curves([{"step": 1, "loss": 2.0, "kl": "nan"}, {"step": 2, "loss": 1.5, "note": "x"}])
    assert curves == {"loss": {"loss": ([1.0, 2.0], [2.0, 1.5])}}


def test_checks_pass_and_fail():
    models = {
        "sft": {"gold_score": 0.1, "distinct_2": 0.8, "perplexity": 20.0},
        "ppo": {"gold_score": 0.5, "distinct_2": 0.5, "perplexity": 31.0},
    }
    checks = {c["name"]: c for c in compute_checks(models, "ppo", "sft", 0.3, 0.5, 1.5)}
    assert checks["gold_gain"]["passed"] and checks["gold_gain"]["value"] == pytest.approx(0.4)
    assert checks["distinct_2_ratio"]["passed"] and checks["distinct_2_ratio"]["value"] == pytest.approx(
        0.625
    )
    assert not checks["perplexity_ratio"]["passed"] and checks["perplexity_ratio"]["value"] == pytest.approx(
        1.55
    )
    assert compute_checks(models, "ppo", "base", 0.3, 0.5, 1.5) == []


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="left")
    return load_causal_lm(str(tiny_model_dir), tokenizer), tokenizer


def test_kl_of_a_model_with_itself_is_zero(tiny, tiny_llama_dir):
    model, tokenizer = tiny
    prompts = ["the movie was", "a dull", "i loved every minute of", "sad"]
    settings = SamplingSettings(max_new_tokens=8)
    samples = sample_responses(model, tokenizer, prompts, settings, batch_size=3, seed=1)
    assert len(samples.texts) == 4 and all(1 <= n <= 8 for n in samples.lengths)
    assert sequence_kls(samples, model, model) == pytest.approx([0.0] * 4, abs=1e-5)
    # A reference with another vocabulary scores the decoded strings under its own tokenization
    # (random tiny models emit non-canonical token sequences, so this path is only ~0 for trained ones).
    retokenized = sequence_kls(samples, model, model, ref_tokenizer=tokenizer)
    assert len(retokenized) == 4 and all(math.isfinite(k) for k in retokenized)
    other_tok = load_tokenizer(str(tiny_llama_dir), padding_side="left")
    other = load_causal_lm(str(tiny_llama_dir), other_tok)
    assert max(abs(k) for k in sequence_kls(samples, model, other)) > 1e-3
    # Same seed, same model -> identical samples (the basis of "win rate against itself is 0.5").
    again = sample_responses(model, tokenizer, prompts, settings, batch_size=3, seed=1)
    assert again.texts == samples.texts


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir), tokenizer)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to the input embeddings: logits are all 0 -> uniform
    vocab = model.lm_head.weight.shape[0]
    texts = ["the movie was wonderful", "a dull film with a terrible plot and bad acting", "x"]
    nll, count = text_nll(model, tokenizer, texts, batch_size=2)
    expected_count = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) - 1 for t in texts)
    assert count == expected_count
    assert metrics.perplexity(nll, count) == pytest.approx(vocab, rel=1e-4)
