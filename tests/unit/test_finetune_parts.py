"""Fine-tuning pieces on tiny models built from configs: inputs, the GPT-1 losses, layer rates, the schedule,
what each parameter-efficient method trains, classifiers as judges, and bad rows."""

from __future__ import annotations

import math

import pytest
import torch
from finetune_helpers import build_tiny_bert, sentiment_rows, write_jsonl
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
)

from alignment.core.errors import ConfigError, DatasetFormatError, ModelLoadError
from alignment.core.judges import check_judge_spec, load_judge
from alignment.core.trainable import add_prefix_tuning, layerwise_param_groups
from alignment.finetune.config import Config
from alignment.finetune.data import load_task
from alignment.finetune.gpt_classifier import GPTClassifier
from alignment.finetune.inputs import (
    SequencesCollator,
    check_encoder_tokenizer,
    decoder_features,
    encoder_features,
)
from alignment.finetune.losses import combine_sequences, language_model_loss
from alignment.finetune.schedules import slanted_triangular, slanted_triangular_scheduler
from alignment.finetune.train import choose_trainable


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def bert_classifier(bert_dir, num_labels=2):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=num_labels)


# ---------------------------------------------------------------------------------------------
# inputs


def test_pair_inputs_carry_cls_sep_and_token_type_ids(bert_dir, tiny_tokenizer):
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    features, cut = encoder_features(
        [{"text": "the movie was", "text_pair": "a dull film", "label": 1}], tokenizer, max_length=32
    )
    ids, types = features[0]["input_ids"], features[0]["token_type_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    first_sep = tokens.index(tokenizer.sep_token)
    assert tokens[0] == tokenizer.cls_token and tokens[-1] == tokenizer.sep_token and cut == 0
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)  # [CLS] A [SEP] | B [SEP]
    assert set(types[first_sep + 1 :]) == {1} and features[0]["labels"] == 1
    single, _ = encoder_features([{"text": "the movie was", "label": 0}], tokenizer, max_length=32)
    assert set(single[0]["token_type_ids"]) == {0} and single[0]["input_ids"][0] == tokenizer.cls_token_id
    check_encoder_tokenizer(tokenizer, "tiny-bert")
    with pytest.raises(ModelLoadError, match="does not start a text with a \\[CLS\\]"):
        check_encoder_tokenizer(tiny_tokenizer, "plain-bpe")  # a BPE without the post-processor


# ---------------------------------------------------------------------------------------------
# the GPT-1 classifier


@pytest.fixture(scope="module")
def gpt_parts(tiny_tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tiny_tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4, num_labels=2,
        pad_token_id=tiny_tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tiny_tokenizer.eos_token_id,
    )  # fmt: skip
    return GPT2ForSequenceClassification(config).eval(), tiny_tokenizer


def test_language_model_loss_of_uniform_logits_is_log_vocab():
    logits = torch.zeros(2, 5, 4)  # uniform over 4 tokens
    ids = torch.tensor([[1, 2, 3, 0, 0], [3, 2, 1, 0, 1]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert language_model_loss(logits, ids, mask).item() == pytest.approx(math.log(4))


def test_gpt_loss_equals_task_loss_plus_lambda_lm_loss_by_hand(gpt_parts):
    model, tokenizer = gpt_parts
    examples = [{"text": "the movie was wonderful", "label": 1}, {"text": "boring slow", "label": 0}]
    features, _ = decoder_features(examples, tokenizer, 32, "single", "\n")
    batch = SequencesCollator(tokenizer.pad_token_id)(features)
    ids, mask, labels = batch["input_ids"][:, 0], batch["attention_mask"][:, 0], batch["labels"]
    assert mask[1].sum() < mask[0].sum()  # the second row is padded
    with torch.no_grad():
        hidden = model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        task_terms, lm_terms = [], []
        for row in range(2):
            n = int(mask[row].sum())
            class_logits = model.score.weight @ hidden[row, n - 1]  # the head reads the last real token
            task_terms.append(-torch.log_softmax(class_logits, -1)[labels[row]])
            vocab_logits = hidden[row, : n - 1] @ model.transformer.wte.weight.T  # tied output layer
            log_probs = torch.log_softmax(vocab_logits, -1)
            lm_terms += [-log_probs[i, ids[row, i + 1]] for i in range(n - 1)]
        task, lm = torch.stack(task_terms).mean(), torch.stack(lm_terms).mean()
        for weight in (0.7, 0.0):
            output = GPTClassifier(model, "single", weight)(**batch)
            assert output.loss.item() == pytest.approx((task + weight * lm).item(), rel=1e-5)
    assert output.logits.shape == (2, 2)


def test_similarity_transformation_is_order_symmetric(gpt_parts):
    model, tokenizer = gpt_parts
    wrapper = GPTClassifier(model, "similarity", 0.0)
    forward = [{"text": "the movie was wonderful", "text_pair": "a dull film", "label": 0}]
    backward = [{"text": "a dull film", "text_pair": "the movie was wonderful", "label": 0}]
    collate = SequencesCollator(tokenizer.pad_token_id)
    with torch.no_grad():
        a = wrapper(**collate(decoder_features(forward, tokenizer, 32, "similarity", "\n")[0])).logits
        b = wrapper(**collate(decoder_features(backward, tokenizer, 32, "similarity", "\n")[0])).logits
        concat = GPTClassifier(model, "single", 0.0)
        c = concat(**collate(decoder_features(forward, tokenizer, 32, "concat", "\n")[0])).logits
        d = concat(**collate(decoder_features(backward, tokenizer, 32, "concat", "\n")[0])).logits
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(c, d, atol=1e-3)
    # Adding the two representations before a bias-free linear head = adding its two outputs.
    h = torch.randn(1, 2, 32)
    assert torch.allclose(combine_sequences(model.score(h), "similarity"), model.score(h.sum(1)), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# discriminative learning rates and the slanted triangular schedule


def test_discriminative_rates_put_the_exact_rate_on_each_layer(bert_dir):
    model = bert_classifier(bert_dir)
    groups = layerwise_param_groups(
        model, 1e-3, 0.5, 0.01, no_decay={n for n, _ in model.named_parameters() if "bias" in n}
    )
    rate_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(rate_of) == sum(1 for _ in model.parameters())  # every parameter in exactly one group
    for name, param in model.named_parameters():
        if name.startswith("bert.encoder.layer."):
            layer = int(name.split(".")[3])
            expected = 1e-3 * 0.5 ** (2 - layer)  # 2 blocks: the top one at lr * 0.5, the bottom at lr * 0.25
        elif name.startswith("bert.embeddings."):
            expected = 1e-3 * 0.5**3
        else:  # classifier and pooler
            expected = 1e-3
        assert rate_of[id(param)] == pytest.approx(expected, rel=1e-12), name
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert all(decay_of[id(p)] == (0.0 if "bias" in n else 0.01) for n, p in model.named_parameters())


def test_slanted_triangular_matches_its_formula():
    total, cut_frac, ratio = 100, 0.1, 32.0
    cut = 10
    for step in (0, 3, 10, 37, 99, 100):
        p = step / cut if step < cut else 1 - (step - cut) / (cut * (1 / cut_frac - 1))
        assert slanted_triangular(step, total, cut_frac, ratio) == pytest.approx(
            (1 + p * (ratio - 1)) / ratio
        )
    assert slanted_triangular(0, total) == pytest.approx(1 / 32) and slanted_triangular(10, total) == 1.0
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": params[:1], "lr": 1.0}, {"params": params[1:], "lr": 0.25}])
    scheduler = slanted_triangular_scheduler(optimizer, total, cut_frac, ratio)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    factor = slanted_triangular(5, total, cut_frac, ratio)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([factor, 0.25 * factor])


# ---------------------------------------------------------------------------------------------
# each method trains only its own parameters

METHODS = {
    "bitfit": {"peft": "bitfit"},
    "frozen": {"freeze_backbone": True},
    "lora": {"peft": "lora"},
    "ia3": {"peft": "ia3"},
    "prompt_tuning": {"peft": "prompt_tuning"},
    "prefix_tuning": {"peft": "prefix_tuning"},
}


def own_parameter(method: str, name: str) -> bool:
    if "classifier" in name:  # the task head trains with every method
        return True
    return {
        "bitfit": name.endswith(".bias"),
        "frozen": False,
        "lora": "lora_" in name,
        "ia3": "ia3_" in name,
        "prompt_tuning": "prompt_encoder" in name,
        "prefix_tuning": ".prefix_" in name,
    }[method]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_trains_only_its_own_parameters(method, bert_dir, tmp_path):
    config = Config(
        dataset="files", train_data=str(tmp_path / "x.jsonl"), model=str(bert_dir), **METHODS[method]
    )
    model, _ = choose_trainable(config, bert_classifier(bert_dir), "encoder")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(own_parameter(method, n) for n in trainable), sorted(trainable)[:5]
    assert any("classifier" in n for n in trainable)
    if method != "frozen":
        assert any("classifier" not in n for n in trainable)  # the method's own parameters, not just the head
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    batch = tokenizer(["the movie was wonderful", "boring slow"], padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


# ---------------------------------------------------------------------------------------------
# classifiers as judges


def test_a_classifier_judge_scores_like_calling_the_model(bert_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    text = "the movie was wonderful and the acting was great"
    for prefix in (False, True):
        model = bert_classifier(bert_dir).eval()
        if prefix:  # a prefix-tuned classifier: the judge must put the saved prefix back
            add_prefix_tuning(model, 4)
            with torch.no_grad():
                for p in model.parameters():
                    if p.requires_grad:
                        p.add_(torch.randn_like(p))
        folder = tmp_path / f"classifier-{prefix}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        with torch.no_grad():
            expected = torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits, -1)[0, 1].item()
        judge = load_judge(f"classifier:{folder}")
        assert judge(text) == pytest.approx(expected, abs=1e-6)
        assert judge.score_texts([text, "boring"])[0] == pytest.approx(expected, abs=1e-6)  # padded batch
    check_judge_spec(f"classifier:{folder}")
    with pytest.raises(ConfigError, match="classifier:<model folder>"):
        check_judge_spec("classifier:")


# ---------------------------------------------------------------------------------------------
# bad rows


def test_bad_rows_name_the_file_row_and_key(tmp_path):
    good = sentiment_rows(1)
    cases = {
        "missing label": ("classification", [*good[:2], {"text": "no label here"}], "row 3: key 'label'"),
        "unknown class": ("classification", None, "row 2: key 'label': expected one of the classes"),
        "non-numeric target": ("regression", [{"text": "a", "label": 1.5}, {"text": "b", "label": "high"}], "row 2: key 'label': expected a number"),
        "missing pair text": ("classification", [{"text": "a", "text_pair": "b", "label": "x"}, {"text": "a", "label": "y"}], "row 2: key 'text_pair'"),
    }  # fmt: skip
    for name, (task, rows, fragment) in cases.items():
        train = write_jsonl(tmp_path / f"{name}.jsonl", rows or good)
        extra = {}
        if name == "unknown class":
            extra["eval_data"] = write_jsonl(
                tmp_path / "eval.jsonl", [good[0], {"text": "odd", "label": "neutral"}]
            )
        config = Config(dataset="files", task=task, train_data=train, **extra)
        with pytest.raises(DatasetFormatError) as error:
            load_task(config)
        message = str(error.value)
        assert fragment in message and ("eval.jsonl" if extra else f"{name}.jsonl") in message, (
            name,
            message,
        )
    # skip_bad_rows drops the bad row instead, and a regression file mixing ints and floats loads
    skipped = Config(
        dataset="files",
        task="regression",
        train_data=str(tmp_path / "non-numeric target.jsonl"),
        skip_bad_rows=True,
    )
    with pytest.raises(DatasetFormatError, match="1 training and 0 held-out"):
        load_task(skipped)
    mixed = write_jsonl(
        tmp_path / "mixed.jsonl", [{"text": f"t{i}", "label": i if i % 2 else i + 0.5} for i in range(10)]
    )
    data = load_task(Config(dataset="files", task="regression", train_data=mixed))
    assert len(data.train) == 9 and all(isinstance(e["label"], float) for e in data.train)
