"""The label-word scorer of in-context classification against log-probs summed by hand, and calibration."""

import random

import torch

from alignment.core.models import load_causal_lm, load_tokenizer
from alignment.reason.classify import (
    Snippet,
    content_free_distribution,
    continuation_logprobs,
    exemplar_prefix,
    predictions,
    render,
    variants,
)

PREFIX = "the movie was wonderful and the acting was great\nSentiment: good\n\n"
CONTEXTS = [
    PREFIX + "a dull film with a terrible plot\nSentiment:",
    PREFIX + "i loved every minute\nSentiment:",
]


def by_hand(model, tokenizer, context: str, continuation: str) -> float:
    """One unpadded sequence, one forward pass, log-softmax, the continuation's tokens summed."""
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    continuation_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(logprobs[len(context_ids) - 1 + t, token].item() for t, token in enumerate(continuation_ids))


def test_scores_equal_log_probs_summed_by_hand(tiny_model_dir, tiny_llama_dir):
    for folder in (tiny_model_dir, tiny_llama_dir):
        tokenizer = load_tokenizer(str(folder))
        model = load_causal_lm(str(folder), tokenizer).eval()
        multi = [" terrible plot", " wonderful"]  # several tokens each in the tiny vocabulary
        single = [tokenizer.decode([tokenizer(" good", add_special_tokens=False)["input_ids"][0]]), " a"]
        for continuations in (multi, single):
            expected = torch.tensor(
                [[by_hand(model, tokenizer, c, w) for w in continuations] for c in CONTEXTS]
            )
            for prefix in ("", PREFIX):  # the shared-prefix cache must not change a score
                got = continuation_logprobs(model, tokenizer, CONTEXTS, continuations, prefix, batch_size=3)
                torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        assert len(tokenizer(multi[0], add_special_tokens=False)["input_ids"]) > 1


def test_contextual_calibration_removes_a_label_bias():
    # The prompt favours class 1 by 2 nats whatever the text; calibration divides that bias out.
    # margins (class 1 - class 0): 2.5, 1.5, 0.1; the bias is log(0.881 / 0.119) = 2 nats
    scores = torch.tensor([[-1.0, 1.5], [-3.0, -1.5], [-0.5, -0.4]])
    content_free = torch.tensor([[-2.0, 0.0], [-3.0, -1.0]])
    p_cf = content_free_distribution(content_free)
    assert predictions(scores) == [1, 1, 1]
    assert predictions(scores, p_cf) == [1, 0, 0]
    torch.testing.assert_close(p_cf, torch.softmax(content_free, dim=1).mean(0))


def test_variants_vary_one_axis_and_keep_classes_balanced():
    pool = [Snippet(f"text {i}", i % 2, 2.0) for i in range(20)]
    words = [["bad", "good"], ["negative", "positive"]]
    formats = ["Review: {text}\nSentiment: {label}", "{text}\nIt was {label}"]
    found = variants([0, 1, 4], pool, 3, words, formats, seed=0)
    k4 = [v for v in found if v.shots == 4]
    assert [v.axis for v in k4] == ["main", "order", "order", "label_words", "format"]
    assert all(sorted(e.label for e in v.exemplars) == [0, 0, 1, 1] for v in k4)
    assert {tuple(e.text for e in v.exemplars) for v in k4 if v.axis in ("main", "order")}.__len__() == 3
    assert len({frozenset(e.text for e in v.exemplars) for v in k4}) == 1  # orders reorder the same set
    k1 = [v for v in found if v.shots == 1 and v.axis in ("main", "order")]
    assert len({v.exemplars[0].text for v in k1}) > 1  # one shot: different exemplars instead
    context, continuations = render(k4[0], "the new text")
    assert context.startswith(exemplar_prefix(k4[0])) and context.endswith("the new text\nSentiment:")
    assert continuations == [" bad", " good"]
    random.seed(0)
