"""The sampling back ends: HF generate (default) and the vLLM adapter's batch layout; the real vLLM needs a GPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from alignment.core.generation import SamplingSettings, generate
from alignment.ppo.sampler import HFSampler, VLLMSampler, batch_from_token_lists


class StandInEngine:
    """Just enough of vLLM's LLM: generate() returns fixed token ids; load_weights() records the call."""

    def __init__(self, responses):
        self.responses, self.loaded = responses, []
        model = SimpleNamespace(load_weights=lambda weights: self.loaded.append(dict(weights)))
        runner = SimpleNamespace(model=model)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner))
        )

    def generate(self, requests, params, use_tqdm=False):
        self.requests = requests
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids)]) for ids in self.responses]


def test_token_lists_make_the_layout_generate_makes(tiny_tokenizer):
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    batch = batch_from_token_lists(tiny_tokenizer, [[10, 11], [12]], [[20, eos, 21], [22, 23, 24]])
    assert batch.query_ids.tolist() == [[10, 11], [pad, 12]] and batch.query_mask.tolist() == [[1, 1], [0, 1]]
    assert batch.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]  # through the first EOS, nothing after
    assert batch.response_ids.tolist() == [[20, eos, pad], [22, 23, 24]]
    assert batch.ended_with_eos.tolist() == [True, False] and batch.logprobs is None


def test_vllm_adapter_syncs_weights_and_returns_the_hf_layout(tiny_tokenizer, tiny_model_dir):
    from alignment.core.models import load_causal_lm

    policy = load_causal_lm(str(tiny_model_dir), tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    engine = StandInEngine([[30, 31, eos], [32]])
    sampler = VLLMSampler("unused", engine=engine, params_factory=lambda **settings: settings)
    sampler.sync(policy)
    assert set(engine.loaded[0]) == set(policy.state_dict())
    batch = sampler.sample(
        policy, tiny_tokenizer, ["the movie", "a dull film"], SamplingSettings(max_new_tokens=3), 16, True
    )
    assert [r["prompt_token_ids"] for r in engine.requests] == [
        tiny_tokenizer("the movie", add_special_tokens=False)["input_ids"],
        tiny_tokenizer("a dull film", add_special_tokens=False)["input_ids"],
    ]
    assert batch.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]] and batch.ended_with_eos.tolist() == [
        True,
        False,
    ]


def test_hf_sampler_is_generate(tiny_tokenizer, tiny_model_dir):
    from alignment.core.models import load_causal_lm

    policy = load_causal_lm(str(tiny_model_dir), tiny_tokenizer).eval()
    settings = SamplingSettings(max_new_tokens=4)
    torch.manual_seed(3)
    ours = HFSampler().sample(policy, tiny_tokenizer, ["the movie"], settings, None, True)
    torch.manual_seed(3)
    direct = generate(policy, tiny_tokenizer, ["the movie"], settings, None, True)
    assert torch.equal(ours.response_ids, direct.response_ids) and torch.equal(ours.logprobs, direct.logprobs)


def test_real_vllm_engine():
    if not torch.cuda.is_available():
        pytest.skip("the vLLM back end needs a CUDA GPU; this machine has none")
    pytest.importorskip("vllm", reason="the vllm package is not installed")
    pytest.skip(
        "no GPU run of the vLLM back end exists yet: run configs/ppo with generation_backend: vllm on one"
    )
