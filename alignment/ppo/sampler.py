"""Where rollouts are sampled: HF `generate` on the policy itself (the default), or a vLLM engine beside it.

A sampler has two methods: `sync(policy)` before each step (an engine holding its own copy of the weights
loads the policy's current ones; HF samples with the live model and does nothing) and `sample(...)`,
which returns a `GeneratedBatch` laid out exactly as `alignment.core.generation.generate` lays it out, so
the rest of the PPO step cannot tell which sampler ran.

The vLLM sampler needs a CUDA GPU and the `vllm` package; it was written against vLLM's documented
`LLM.generate` / `SamplingParams` API but has NOT been run here (no GPU on the machines this was built
on): tests/unit/test_ppo_sampler.py checks its batch layout with a stand-in engine and skips the real one
with the reason. Its log-probs are recomputed by the policy's forward pass (vLLM's are of its own kernels).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from transformers import PreTrainedTokenizerBase

from alignment.core.errors import ConfigError
from alignment.core.generation import GeneratedBatch, SamplingSettings, generate, response_mask_from_ids
from alignment.core.tokens import padding_side


class Sampler(Protocol):
    """What the rollout step needs from a sampling back end."""

    def sync(self, policy: torch.nn.Module) -> None:
        """Make the next samples come from the policy's current weights."""

    def sample(
        self,
        policy: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[str],
        settings: SamplingSettings,
        max_prompt_length: int | None,
        return_logprobs: bool,
    ) -> GeneratedBatch:
        """One response per prompt."""


class HFSampler:
    """HF `generate` on the policy itself (KV cache, left padding); log-probs from the sampling pass."""

    def sync(self, policy: torch.nn.Module) -> None:
        """Nothing to do: the policy samples with its live weights."""

    def sample(
        self,
        policy: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[str],
        settings: SamplingSettings,
        max_prompt_length: int | None,
        return_logprobs: bool,
    ) -> GeneratedBatch:
        """See `alignment.core.generation.generate`."""
        return generate(policy, tokenizer, prompts, settings, max_prompt_length, return_logprobs)


class VLLMSampler:
    """A vLLM engine on the GPU with its own copy of the policy's weights, reloaded before every step."""

    def __init__(
        self,
        model_path: str,
        gpu_memory_utilization: float = 0.3,
        engine: Any = None,
        params_factory: Any = None,
    ):
        self.make_params = params_factory or _vllm_sampling_params
        if engine is None:
            if not torch.cuda.is_available():
                raise ConfigError(
                    "generation_backend: 'vllm' needs a CUDA GPU; this machine has none (use 'hf')"
                )
            try:
                from vllm import LLM
            except ImportError:
                raise ConfigError(
                    "generation_backend: 'vllm' needs the vllm package (pip install vllm)"
                ) from None
            engine = LLM(model=model_path, dtype="float32", gpu_memory_utilization=gpu_memory_utilization)
        self.engine = engine

    def sync(self, policy: torch.nn.Module) -> None:
        """Load the policy's current weights into the engine's model (vLLM's `load_weights`)."""
        model = self.engine.llm_engine.model_executor.driver_worker.model_runner.model
        model.load_weights(((name, tensor.detach()) for name, tensor in policy.state_dict().items()))

    def sample(
        self,
        policy: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[str],
        settings: SamplingSettings,
        max_prompt_length: int | None,
        return_logprobs: bool,
    ) -> GeneratedBatch:
        """Sample with vLLM; the batch is laid out as HF `generate` lays it out (logprobs: None)."""
        params = self.make_params(
            temperature=settings.temperature,
            top_k=settings.top_k or -1,
            top_p=settings.top_p,
            max_tokens=settings.max_new_tokens,
            min_tokens=settings.min_new_tokens,
        )
        with padding_side(tokenizer, "left"):
            encoded = tokenizer(
                prompts,
                truncation=max_prompt_length is not None,
                max_length=max_prompt_length,
                add_special_tokens=False,
            )
        requests = [{"prompt_token_ids": ids} for ids in encoded["input_ids"]]
        outputs = self.engine.generate(requests, params, use_tqdm=False)
        responses = [list(output.outputs[0].token_ids) for output in outputs]
        device = next(policy.parameters()).device
        return batch_from_token_lists(tokenizer, encoded["input_ids"], responses, device)


def _vllm_sampling_params(**settings: Any) -> Any:
    from vllm import SamplingParams  # lazy: only the vLLM back end needs it

    return SamplingParams(**settings)


def batch_from_token_lists(
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    device: torch.device | str = "cpu",
) -> GeneratedBatch:
    """A `GeneratedBatch` from plain id lists: prompts left-padded, responses right-padded after the first EOS."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    query_len = max(len(ids) for ids in prompt_ids)
    response_len = max(1, max(len(ids) for ids in response_ids))
    query = torch.full((len(prompt_ids), query_len), pad, dtype=torch.long)
    query_mask = torch.zeros_like(query)
    for row, ids in enumerate(prompt_ids):
        if ids:
            query[row, query_len - len(ids) :] = torch.tensor(ids)
            query_mask[row, query_len - len(ids) :] = 1
    response = torch.full((len(response_ids), response_len), pad, dtype=torch.long)
    for row, ids in enumerate(response_ids):
        if ids:
            response[row, : len(ids)] = torch.tensor(ids)
    mask, ended = response_mask_from_ids(response, eos)
    mask = (
        mask
        * (
            torch.arange(response_len).unsqueeze(0)
            < torch.tensor([len(ids) for ids in response_ids]).unsqueeze(1)
        ).long()
    )
    response = response.masked_fill(mask == 0, pad)
    texts = tokenizer.batch_decode(response, skip_special_tokens=True)
    return GeneratedBatch(
        query_ids=query.to(device),
        query_mask=query_mask.to(device),
        response_ids=response.to(device),
        response_mask=mask.to(device),
        response_texts=texts,
        ended_with_eos=ended.to(device),
    )


def build_sampler(backend: str, model_path: str, gpu_memory_utilization: float) -> Sampler:
    """The sampler a config names."""
    if backend == "vllm":
        return VLLMSampler(model_path, gpu_memory_utilization)
    return HFSampler()
