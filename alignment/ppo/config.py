"""The PPO stage's configuration: one typed field per knob, each documented beside its default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.core.chat import check_template
from alignment.core.config import RESUME_HELP, ConfigError, StageConfig, require
from alignment.core.judges import check_judge_spec


@dataclass
class Config(StageConfig):
    """PPO (InstructGPT stage 3): policy, value model, frozen reference and a reward model or judge."""

    stage: ClassVar[str] = "ppo"

    # --- models
    model: str = field(
        default="runs/tiny-sentiment/sft/model", metadata={"help": "SFT model folder the policy starts from."}
    )
    reference_model: str | None = field(
        default=None,
        metadata={
            "help": "Frozen reference for the KL penalty; null = model (with LoRA: the adapter disabled)."
        },
    )
    reward_model: str | None = field(
        default="runs/tiny-sentiment/reward/model",
        metadata={
            "help": "Reward model folder (reward.model format, own tokenizer); null when reward_fn is used."
        },
    )
    reward_fn: str | None = field(
        default=None,
        metadata={
            "help": "A judge used instead of reward_model: 'vader' or 'module:function' mapping text -> float."
        },
    )
    value_model: Literal["separate", "policy_head", "none"] = field(
        default="separate",
        metadata={
            "help": "separate: a critic with its own backbone; policy_head: a scalar head on the policy; none: no "
            "critic (advantage_estimator: rloo)."
        },
    )
    value_model_init: str | None = field(
        default=None,
        metadata={
            "help": "Backbone of a separate critic; null = reward_model if it shares the vocabulary, else model."
        },
    )
    value_head_init: Literal["reward_head", "fresh"] = field(
        default="reward_head",
        metadata={
            "help": "reward_head: when the critic starts from the reward model, reuse its scalar head; else zeros."
        },
    )
    peft: Literal["none", "lora"] = field(
        default="none",
        metadata={
            "help": "lora: train LoRA adapters on the policy (merged into the saved model); none: all weights."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (0 keeps PPO ratios exact)."})
    target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Modules LoRA adapts; ['all-linear'] = every linear layer but the head."},
    )

    # --- data
    train_data: str = field(
        default="cache://datasets/sentiment/prompts_train.jsonl",
        metadata={"help": "Training prompts (format 'prompts': {prompt})."},
    )
    eval_data: str | None = field(
        default="cache://datasets/sentiment/prompts_heldout.jsonl",
        metadata={"help": "Held-out prompts scored at the start and the end (null to skip)."},
    )
    max_eval_samples: int = field(default=64, metadata={"help": "How many held-out prompts to score."})
    eval_steps: int = field(
        default=0,
        metadata={"help": "Score the held-out prompts every N steps too (0: at the start and the end only)."},
    )
    eval_judge: str | None = field(
        default=None,
        metadata={
            "help": "A gold judge for the held-out scores ('vader', 'module:function', 'classifier:<folder>'), "
            "logged beside the reward model's (proxy) score and the KL to the reference: the over-optimization "
            "view (Gao et al. 2022). Where no gold judge exists, 'classifier:<folder>' of a reward model trained "
            "on other comparisons (reward train_shard) stands in for one."
        },
    )
    select_by: Literal["last", "gold"] = field(
        default="last",
        metadata={
            "help": "Which policy model/ holds: the last, or the one with the best held-out gold score (checked at "
            "every evaluation; needs eval_judge)."
        },
    )
    select_patience: int = field(
        default=0,
        metadata={
            "help": "With select_by: gold, stop after this many held-out evaluations without a better gold score "
            "(0: never stop early)."
        },
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "What the policy is asked, with {prompt} for each prompt (the instruction SFT taught); the "
            "reward model and judges read the raw prompt + response. null: the prompt itself."
        },
    )
    use_chat_template: bool = field(
        default=False,
        metadata={"help": "Send the (templated) prompt as a user turn of the tokenizer's chat template."},
    )
    max_prompt_length: int = field(
        default=64, metadata={"help": "Prompts are truncated to this many tokens."}
    )

    # --- sampling
    max_new_tokens: int = field(default=24, metadata={"help": "Response length limit."})
    min_new_tokens: int = field(default=0, metadata={"help": "Responses are at least this long."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature (0 = greedy, for tests)."}
    )
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (1 = off)."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of responses that never emitted EOS."}
    )

    # --- schedule
    max_steps: int = field(
        default=100, metadata={"help": "PPO iterations (each: rollouts, scoring, PPO epochs)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Rollouts per iteration, over all processes."})
    mini_batch_size: int = field(
        default=8, metadata={"help": "Rollouts per optimizer step, over all processes."}
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={"help": "Micro-batches per mini-batch (micro = mini / processes / accumulation)."},
    )
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each batch of rollouts."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Policy learning rate (Adam)."})
    value_learning_rate: float | None = field(
        default=None, metadata={"help": "Critic learning rate; null = learning_rate."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})

    # --- PPO
    gamma: float = field(default=1.0, metadata={"help": "Discount (GAE gamma)."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip epsilon."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip epsilon."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten advantages over the batch."})
    advantage_estimator: Literal["gae", "rloo"] = field(
        default="gae",
        metadata={
            "help": "gae: per-token advantages from the critic (GAE); rloo: each response's total reward minus "
            "the mean of the other samples_per_prompt - 1 responses to its prompt (no critic needed)."
        },
    )
    samples_per_prompt: int = field(
        default=1,
        metadata={
            "help": "Responses sampled per prompt each step (batch_size counts responses); rloo needs >= 2."
        },
    )

    # --- reward shaping and KL
    kl_coef: float = field(
        default=0.05, metadata={"help": "KL penalty coefficient beta (initial, if adaptive)."}
    )
    kl_loss_coef: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a per-token KL(policy || reference) loss beside the reward's penalty: the k2 "
            "estimator 0.5 * (log pi - log pi_ref)^2 on the sampled tokens, whose gradient pulls each token's "
            "distribution back toward the reference without the noise of a sequence-level penalty (0 = off)."
        },
    )
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1", metadata={"help": "Per-token KL estimator in the reward."}
    )
    adaptive_kl: bool = field(
        default=False, metadata={"help": "Adapt beta toward target_kl (Ziegler et al. 2019)."}
    )
    target_kl: float = field(
        default=6.0, metadata={"help": "Adaptive controller's target KL per sequence (nats)."}
    )
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive controller's horizon (in rollouts)."})
    kl_ceiling: float | None = field(
        default=None,
        metadata={"help": "Sequence KL above which the run stops or backs off (null = no guard)."},
    )
    kl_budget: float | None = field(
        default=None,
        metadata={
            "help": "End the run (and save its policy) once the mean sequence KL of the last kl_budget_window "
            "steps' rollouts reaches this many nats: how far from the reference the run may go, whatever its "
            "seed makes of the KL coefficient (null = run max_steps)."
        },
    )
    kl_budget_window: int = field(
        default=10, metadata={"help": "Steps whose rollout KL is averaged for kl_budget."}
    )
    kl_ceiling_action: Literal["stop", "backoff"] = field(
        default="stop",
        metadata={"help": "At the ceiling: stop (with a checkpoint) or double beta and go on."},
    )
    normalize_reward: bool = field(
        default=True,
        metadata={"help": "Standardize RM scores with <reward_model>/reward_stats.json (mean, std)."},
    )
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Rescale scores by their batch std (mean kept)."}
    )
    score_clip: float | None = field(default=None, metadata={"help": "Clip scores to [-c, c] (null = off)."})
    reward_batch_size: int = field(default=32, metadata={"help": "Batch size for reward-model scoring."})
    forward_batch_size: int = field(
        default=0,
        metadata={
            "help": "Rollouts per no-grad forward pass when scoring (reference, critic): 0 = all of a process's "
            "rollouts at once (fastest on CPU; lower it when memory is short)."
        },
    )
    generation_backend: Literal["hf", "vllm"] = field(
        default="hf",
        metadata={
            "help": "hf: sample with HF generate on the policy; vllm: a vLLM engine on the GPU, weights synced "
            "from the policy every step (see ppo/sampler.py; not run on CPU machines)."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata={"help": "Share of GPU memory the vLLM engine may take (generation_backend: vllm)."},
    )
    precision: Literal["fp32", "bf16", "auto"] = field(
        default="fp32",
        metadata={
            "help": "bf16: autocast sampling and forward passes to bfloat16 (weights, optimizer and losses stay "
            "fp32). Faster on GPUs and CPUs with AVX-512 BF16/AMX; far slower on AVX2-only CPUs (measured: "
            "README); auto: bf16 where it is fast, fp32 elsewhere (config.yaml records the choice)."
        },
    )
    packing: bool = field(
        default=True,
        metadata={
            "help": "Training forwards over real tokens only: a micro-batch's sequences packed into rows, kept "
            "apart by their position ids (padding after EOS costs nothing)."
        },
    )
    logprobs_from_sampling: bool = field(
        default=True,
        metadata={
            "help": "Take the old log-probs from the sampling pass (no second policy forward); a separate critic "
            "then runs alone. Off: a policy forward computes them (always so with value_model: policy_head)."
        },
    )

    # --- PPO-ptx
    ptx_coef: float = field(
        default=0.0, metadata={"help": "Weight of the pretraining LM loss (InstructGPT PPO-ptx)."}
    )
    ptx_data: str | None = field(default=None, metadata={"help": "Text dataset for PPO-ptx (format 'text')."})
    ptx_batch_size: int = field(default=4, metadata={"help": "PPO-ptx texts per micro-batch, per process."})
    ptx_max_length: int = field(
        default=64, metadata={"help": "PPO-ptx texts are truncated to this many tokens."}
    )

    # --- bookkeeping
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N steps (0 = only at the end)."})
    save_total_limit: int = field(default=2, metadata={"help": "Newest checkpoints kept on disk."})
    resume: str = field(default="auto", metadata={"help": RESUME_HELP})
    sample_steps: int = field(
        default=10, metadata={"help": "Log sample responses every N steps (0 = never)."}
    )
    save_model: bool = field(default=True, metadata={"help": "Save the final policy and value model."})
    progress_bar: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        if self.reward_model is None and self.reward_fn is None:
            raise ConfigError(
                "reward_model / reward_fn: set one of them (a reward model folder or 'module:function')"
            )
        if self.reward_model is not None and self.reward_fn is not None:
            raise ConfigError(
                "reward_model / reward_fn: set only one (set reward_model: null to use reward_fn)"
            )
        if self.reward_fn is not None:
            check_judge_spec(self.reward_fn, "reward_fn")
        check_template(self.prompt_template, "prompt_template")
        if self.eval_judge is not None:
            check_judge_spec(self.eval_judge, "eval_judge")
        require(self.eval_steps >= 0, "eval_steps", ">= 0", self.eval_steps)
        require(self.select_patience >= 0, "select_patience", ">= 0", self.select_patience)
        if self.select_by == "gold" and (self.eval_judge is None or self.eval_data is None):
            raise ConfigError(
                "select_by: 'gold' needs eval_judge and eval_data (held-out prompts scored by a judge)"
            )
        for key in (
            "max_steps",
            "batch_size",
            "mini_batch_size",
            "gradient_accumulation_steps",
            "ppo_epochs",
            "max_new_tokens",
            "max_prompt_length",
            "reward_batch_size",
            "max_eval_samples",
            "kl_horizon",
        ):
            require(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        if self.value_model == "none" and self.advantage_estimator == "gae":
            raise ConfigError(
                "value_model: 'none' needs advantage_estimator: rloo (GAE needs a critic's values)"
            )
        require(
            self.samples_per_prompt >= 1, "samples_per_prompt", "an integer >= 1", self.samples_per_prompt
        )
        require(
            self.advantage_estimator != "rloo" or self.samples_per_prompt >= 2,
            "samples_per_prompt",
            ">= 2 with advantage_estimator: rloo (the baseline is the other responses to the same prompt)",
            self.samples_per_prompt,
        )
        require(
            self.batch_size % self.samples_per_prompt == 0,
            "batch_size",
            "a multiple of samples_per_prompt",
            self.batch_size,
        )
        require(
            self.batch_size % self.mini_batch_size == 0,
            "batch_size",
            "a multiple of mini_batch_size",
            self.batch_size,
        )
        require(
            self.mini_batch_size % self.gradient_accumulation_steps == 0,
            "mini_batch_size",
            "a multiple of gradient_accumulation_steps",
            self.mini_batch_size,
        )
        require(
            0 <= self.min_new_tokens <= self.max_new_tokens,
            "min_new_tokens",
            "between 0 and max_new_tokens",
            self.min_new_tokens,
        )
        require(self.temperature >= 0, "temperature", ">= 0", self.temperature)
        require(0 < self.top_p <= 1, "top_p", "in (0, 1]", self.top_p)
        require(self.top_k >= 0, "top_k", ">= 0", self.top_k)
        require(0 <= self.gamma <= 1, "gamma", "in [0, 1]", self.gamma)
        require(0 <= self.lam <= 1, "lam", "in [0, 1]", self.lam)
        for key in ("cliprange", "cliprange_value", "target_kl"):
            require(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        for key in ("vf_coef", "entropy_coef", "kl_coef", "kl_loss_coef", "ptx_coef"):
            require(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        require(
            self.value_learning_rate is None or self.value_learning_rate > 0,
            "value_learning_rate",
            "> 0",
            self.value_learning_rate,
        )
        require(self.kl_ceiling is None or self.kl_ceiling > 0, "kl_ceiling", "> 0 or null", self.kl_ceiling)
        require(self.kl_budget is None or self.kl_budget > 0, "kl_budget", "> 0 or null", self.kl_budget)
        require(self.kl_budget_window >= 1, "kl_budget_window", ">= 1", self.kl_budget_window)
        require(self.score_clip is None or self.score_clip > 0, "score_clip", "> 0 or null", self.score_clip)
        require(
            self.ptx_coef == 0 or self.ptx_data is not None,
            "ptx_data",
            "a text dataset when ptx_coef > 0",
            self.ptx_data,
        )
        require(self.ptx_batch_size >= 1, "ptx_batch_size", "an integer >= 1", self.ptx_batch_size)
        require(self.ptx_max_length >= 2, "ptx_max_length", "an integer >= 2", self.ptx_max_length)
        require(self.sample_steps >= 0, "sample_steps", ">= 0", self.sample_steps)
        require(self.forward_batch_size >= 0, "forward_batch_size", ">= 0", self.forward_batch_size)
        require(
            0 < self.vllm_gpu_memory_utilization <= 1,
            "vllm_gpu_memory_utilization",
            "a share in (0, 1]",
            self.vllm_gpu_memory_utilization,
        )
        if self.generation_backend == "vllm" and self.peft != "none":
            raise ConfigError("generation_backend: 'vllm' syncs full weights; use it with peft: none")
        require(self.lora_r >= 1, "lora_r", ">= 1", self.lora_r)
