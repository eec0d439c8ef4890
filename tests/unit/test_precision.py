"""`precision: auto` picks bf16 only where the CPU computes it natively, and the Trainer arguments follow."""

import pytest
import torch

from alignment.core import launch


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")],
)
def test_auto_precision_follows_the_cpu(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert launch.resolve_precision("auto") == expected
    kwargs = launch.trainer_backend_kwargs("auto")
    assert kwargs["bf16"] is (expected == "bf16")
    # transformers refuses bf16 without a GPU unless the CPU is named as the device
    assert kwargs.get("use_cpu", False) is (expected == "bf16")


def test_explicit_precision_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert launch.resolve_precision("bf16") == "bf16"
    assert launch.trainer_backend_kwargs("fp32") == {"bf16": False, "fp16": False}


def test_auto_precision_under_deepspeed_on_a_cpu_stays_fp32(monkeypatch):
    # DeepSpeed's bf16 keeps and saves bf16 weights, which 'auto' must not choose silently; an explicit bf16
    # still gets it, with the CPU named so transformers does not refuse it (caught by a 2-process ZeRO-3 run).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert launch.trainer_backend_kwargs("auto") == {"bf16": False, "fp16": False}
    assert launch.trainer_backend_kwargs("bf16") == {"bf16": True, "fp16": False, "use_cpu": True}


def test_sft_training_arguments_follow_its_precision(tmp_path):
    from alignment.core.config import build_config
    from alignment.sft.config import Config
    from alignment.sft.train import build_training_args

    for precision in ("fp32", "bf16"):
        config = build_config(Config, {"model": "m", "train_data": "d.jsonl", "precision": precision})
        args = build_training_args(config, tmp_path, has_eval=False, resuming=False)
        assert args.bf16 is (precision == "bf16")
