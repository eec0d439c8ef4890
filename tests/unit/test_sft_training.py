"""What trains and what is seen: packed sequences stay apart; adapters and freezing touch only their parameters."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl.data_utils import pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from alignment.core.config import ConfigError
from alignment.core.models import load_causal_lm
from alignment.core.trainable import GradualUnfreezeCallback, freeze, transformer_blocks
from alignment.sft.config import Config
from alignment.sft.train import build_trainer

DEMOS = [
    ("the movie was", " wonderful and the acting was great"),
    ("a dull film", " with a terrible plot and bad acting"),
    ("i loved every", " minute of this charming story"),
    ("the worst movie", " i have seen in years"),
]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft-demos") / "demos.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in DEMOS * 8))
    return str(path)


@pytest.mark.parametrize("model_fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_packed_sequences_do_not_attend_to_each_other(request, model_fixture):
    """Logits of each sequence packed into one row (as SFTTrainer packs them) equal its logits alone."""
    model = load_causal_lm(str(request.getfixturevalue(model_fixture))).eval()
    sequences = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], [30, 31, 32, 33, 34]]
    dataset = Dataset.from_dict({"input_ids": sequences, "labels": sequences})
    packed = pack_dataset(dataset, seq_length=16, strategy="bfd")
    assert len(packed) == 1  # all three share one row
    batch = DataCollatorForLanguageModeling(pad_token_id=1, padding_free=True)([packed[0]])
    assert "attention_mask" not in batch  # padding-free: sequences are told apart by position_ids only
    bounds = batch["cu_seq_lens_q"].tolist()
    with torch.no_grad():
        packed_logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits[0]
        for start, end in zip(bounds[:-1], bounds[1:]):
            ids = batch["input_ids"][:, start:end]
            assert ids[0].tolist() in sequences
            alone = model(input_ids=ids, use_cache=False).logits[0]
            torch.testing.assert_close(packed_logits[start:end], alone, atol=1e-5, rtol=1e-4)
    assert len(bounds) - 1 == len(sequences)
    # Control: the same row as one causal sequence (positions not reset) does see across the boundary.
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
    assert not torch.allclose(leaky, packed_logits, atol=1e-3)


def _trainer(tmp_path, model_dir, demos, **overrides):
    settings = dict(
        model=str(model_dir),
        train_data=demos,
        eval_data=None,
        eval_fraction=0.0,
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        warmup_ratio=0.0,
        save_steps=0,
        num_samples=0,
        logging_steps=1,
    )
    config = Config(**{**settings, **overrides})
    trainer, _, _ = build_trainer(config, tmp_path / "run")
    return trainer


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "method,adapter_key",
    [
        ("lora", "lora_"),
        ("ia3", "ia3_"),
        ("prompt_tuning", "prompt_encoder"),
    ],
)
def test_adapters_train_only_their_own_parameters(tmp_path, tiny_model_dir, demos, method, adapter_key):
    overrides = {"packing": False} if method == "prompt_tuning" else {}
    trainer = _trainer(tmp_path, tiny_model_dir, demos, peft=method, **overrides)
    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(adapter_key in n for n in trainable)
    before = _snapshot(model)
    trainer.train()
    assert any(r.get("loss") is not None for r in trainer.state.log_history)
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == (name in trainable), f"{name}: changed={changed}, trainable={name in trainable}"


def test_freezing_freezes_exactly_the_bottom_blocks_and_embeddings(tmp_path, tiny_model_dir, demos):
    trainer = _trainer(tmp_path, tiny_model_dir, demos, freeze_layers=1, freeze_embeddings=True)
    model = trainer.model
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("transformer.h.0.", "transformer.wte", "transformer.wpe"))
    }
    assert frozen == expected  # lm_head is tied to wte, so named_parameters lists it once, as wte
    before = _snapshot(model)
    trainer.train()
    for name, param in model.named_parameters():
        assert torch.equal(before[name], param.detach()) == (name in frozen), name


def test_freeze_rejects_more_blocks_than_the_model_has(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))
    with pytest.raises(ValueError, match="freeze_layers: expected at most 2"):
        freeze(model, bottom_blocks=3)


def test_gradual_unfreezing_opens_one_block_from_the_top_every_n_steps(tiny_llama_dir):
    model = load_causal_lm(str(tiny_llama_dir))
    blocks = transformer_blocks(model)
    callback = GradualUnfreezeCallback(model, every=2)

    def trainable(step):
        callback._apply(step)
        return [all(p.requires_grad for p in b.parameters()) for b in blocks]

    assert trainable(0) == [False, True] and trainable(1) == [False, True]
    assert trainable(2) == [True, True] and trainable(10) == [True, True]
    assert GradualUnfreezeCallback(model, every=2, floor=1).trainable_blocks(10) == 1  # never below the floor


def test_gradual_unfreezing_in_training(tmp_path, tiny_model_dir, demos):
    """With unfreeze_every=2, block 0 stays put for steps 1-2 and then trains; block 1 trains from the start."""
    trainer = _trainer(tmp_path, tiny_model_dir, demos, unfreeze_every=2, max_steps=4)
    snapshots = {0: _snapshot(trainer.model)}

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = _snapshot(model)

    trainer.add_callback(Record())
    trainer.train()

    def changed(prefix, a, b):
        return any(
            not torch.equal(snapshots[a][n], snapshots[b][n]) for n in snapshots[a] if n.startswith(prefix)
        )

    assert not changed("transformer.h.0.", 0, 2) and changed("transformer.h.0.", 2, 4)
    assert changed("transformer.h.1.", 0, 1)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"peft": "lora", "freeze_layers": 1}, "peft: 'lora' trains only its adapter"),
        ({"peft": "prompt_tuning", "packing": True}, "packing: expected false"),
        ({"max_length": 4}, "max_length: expected an int >= 8"),
        ({"eval_fraction": 1.0}, r"eval_fraction: expected a share in \[0, 1\)"),
        ({"max_steps": 0}, r"max_steps: expected -1 \(use num_train_epochs\) or an int >= 1"),
    ],
)
def test_config_rejects_impossible_values_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config(**overrides)
