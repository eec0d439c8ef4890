"""The evaluation stage's configuration: which checkpoints, which prompts, which judges, which checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.core.chat import check_template
from alignment.core.config import StageConfig, require
from alignment.core.judges import check_judge_spec


@dataclass
class Config(StageConfig):
    """Which checkpoints to compare, on which prompts, with which judges."""

    stage: ClassVar[str] = "evaluate"

    models: dict = field(
        default_factory=dict,
        metadata={
            "help": "Models to evaluate: name -> model folder (any causal LM folder or cache:// path)."
        },
    )
    baseline: str | None = field(
        default=None,
        metadata={"help": "Model name that win rates are measured against (default: the first)."},
    )
    reference: str | None = field(
        default=None,
        metadata={
            "help": "KL reference: a name in `models` or a model folder (default: the baseline); null to skip."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={"help": "Reward model folder (reward/model.py format); null to skip RM scores."},
    )
    prompts: str = field(
        default="cache://datasets/sentiment/prompts_heldout.jsonl",
        metadata={
            "help": "Prompt set: a JSONL/JSON/CSV/Parquet file with a `prompt` column, or a .txt file, one per line."
        },
    )
    max_prompts: int = field(default=128, metadata={"help": "Use the first N prompts."})
    judges: list[str] = field(
        default_factory=lambda: ["vader"],
        metadata={
            "help": "Judges: 'vader' or 'module:function' (Callable[[str], float]); the first is the gold judge."
        },
    )
    judge_prompt: bool = field(
        default=True,
        metadata={"help": "Judges and the reward model see prompt + response (false: response only)."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Tokens sampled per response."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature (0 = greedy; KL needs 1)."}
    )
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (1.0 = off)."})
    max_prompt_length: int = field(
        default=64, metadata={"help": "Prompts are truncated to this many tokens."}
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "What the models are asked, with {prompt} for each prompt (e.g. the instruction SFT taught); "
            "judges and the reward model still read the raw prompt + response. null: the prompt itself."
        },
    )
    use_chat_template: bool = field(
        default=False,
        metadata={"help": "Send the (templated) prompt as a user turn of each model's chat template."},
    )
    format_rule: Literal["none", "continuation"] = field(
        default="none",
        metadata={
            "help": "How the format score counts a response as answering in the asked form. continuation: it "
            "stopped by itself (EOS), has at least 3 words, and holds no chat-template marker and no line break."
        },
    )
    response_loss_data: str | None = field(
        default=None,
        metadata={
            "help": "Held-out demonstrations (messages or prompt/completion): each model's mean loss on their "
            "response tokens (what SFT trains), in the report; null to skip."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Prompts per generation/forward batch."})
    perplexity_data: str | None = field(
        default="cache://datasets/sentiment/corpus_heldout.jsonl",
        metadata={
            "help": "Natural text for held-out perplexity (`text` column, or prompt+completion); null to skip."
        },
    )
    perplexity_source: str | None = field(
        default=None, metadata={"help": "Keep only rows whose `source` is this (e.g. movie); null keeps all."}
    )
    perplexity_max_rows: int = field(default=256, metadata={"help": "Use the first N perplexity texts."})
    max_length: int = field(
        default=128,
        metadata={"help": "Perplexity texts and reward-model inputs are truncated to this many tokens."},
    )
    num_samples: int = field(default=8, metadata={"help": "Prompts shown side by side in report.md."})
    plots: bool = field(
        default=True, metadata={"help": "Write PNG plots (training curves, gold score against KL)."}
    )
    check_model: str = field(
        default="ppo", metadata={"help": "Model whose acceptance checks report.md states."}
    )
    check_baseline: str = field(
        default="sft", metadata={"help": "Model the checks compare `check_model` with."}
    )
    check_min_gold_gain: float = field(
        default=0.3, metadata={"help": "Check: gold score gain at least this."}
    )
    check_min_distinct_ratio: float = field(
        default=0.5, metadata={"help": "Check: distinct-2 ratio at least this."}
    )
    check_max_perplexity_ratio: float = field(
        default=1.5, metadata={"help": "Check: held-out perplexity ratio at most this."}
    )
    check_max_kl: float | None = field(
        default=None,
        metadata={"help": "Check: KL of check_model to the reference at most this (null: no check)."},
    )
    check_tuned_model: str | None = field(
        default=None,
        metadata={
            "help": "The instruction-tuned model whose format and response loss are checked (e.g. sft)."
        },
    )
    check_base_model: str | None = field(
        default=None, metadata={"help": "The model check_tuned_model started from (e.g. base)."}
    )
    check_min_response_loss_drop: float = field(
        default=0.2,
        metadata={"help": "Check: response loss of the tuned model at least this share below the base's."},
    )
    check_min_format_score: float = field(
        default=0.9, metadata={"help": "Check: format score of the tuned model at least this."}
    )
    check_min_rm_accuracy: float | None = field(
        default=None,
        metadata={
            "help": "Check: the reward model's held-out accuracy on pairs with rating gap >= 1 at least this."
        },
    )
    best_of_n: int = field(
        default=0,
        metadata={
            "help": "Best-of-n baseline (needs reward_model): N samples per prompt from best_of_n_model, the "
            "reward model's favourite of n graded by the gold judge, for n = 1, 2, 4, ..., N (a power of 2; "
            "0: off). Drawn beside PPO's held-out scores on sqrt(KL) in plots/overoptimization.png."
        },
    )
    best_of_n_model: str | None = field(
        default=None,
        metadata={"help": "Name in `models` that best-of-n samples from (default: the KL reference)."},
    )
    best_of_n_prompts: int = field(
        default=32, metadata={"help": "Best-of-n uses the first N prompts (N samples each)."}
    )
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        for name, path in self.models.items():
            require(isinstance(path, str) and bool(path), f"models.{name}", "a model folder path", path)
        # `models` may come from the command line after a file is validated alone (parse_config does
        # that), so "at least one model" and "baseline is one of them" are checked in `check_models`.
        require(self.max_prompts >= 1, "max_prompts", ">= 1", self.max_prompts)
        require(bool(self.judges), "judges", "at least one judge", self.judges)
        require(self.max_new_tokens >= 1, "max_new_tokens", ">= 1", self.max_new_tokens)
        require(self.temperature >= 0, "temperature", ">= 0", self.temperature)
        require(0 < self.top_p <= 1, "top_p", "in (0, 1]", self.top_p)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.perplexity_max_rows >= 1, "perplexity_max_rows", ">= 1", self.perplexity_max_rows)
        require(self.max_length >= 2, "max_length", ">= 2", self.max_length)
        require(self.num_samples >= 0, "num_samples", ">= 0", self.num_samples)
        require(self.device in ("auto", "cpu", "cuda"), "device", "'auto', 'cpu' or 'cuda'", self.device)
        for index, spec in enumerate(self.judges):
            check_judge_spec(spec, f"judges[{index}]")
        check_template(self.prompt_template, "prompt_template")
        n = self.best_of_n
        require(n == 0 or (n >= 2 and n & (n - 1) == 0), "best_of_n", "0 (off) or a power of 2 >= 2", n)
        require(self.best_of_n_prompts >= 1, "best_of_n_prompts", ">= 1", self.best_of_n_prompts)
        if n:
            require(
                self.reward_model is not None,
                "reward_model",
                "a reward model folder when best_of_n > 0",
                None,
            )

    def check_models(self) -> None:
        """Raise `ConfigError` unless there is a model to evaluate and the baseline is one of them."""
        require(bool(self.models), "models", "a mapping of at least one name -> model folder", self.models)
        if self.baseline is not None:
            require(self.baseline in self.models, "baseline", f"one of {list(self.models)}", self.baseline)
        if self.best_of_n and self.best_of_n_model is not None:
            require(
                self.best_of_n_model in self.models,
                "best_of_n_model",
                f"one of {list(self.models)}",
                self.best_of_n_model,
            )

    @property
    def baseline_name(self) -> str:
        """The baseline model's name (the first model unless set)."""
        return self.baseline or next(iter(self.models))
