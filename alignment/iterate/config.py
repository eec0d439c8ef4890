"""The iterated loop's configuration: where round 0 comes from, how each round samples, labels and trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.core.chat import check_template
from alignment.core.config import ConfigError, StageConfig, parse_config, require
from alignment.core.formats import MAX_RANKED_COMPLETIONS
from alignment.core.judges import check_judge_spec
from reward.app.config import LabelConfig

STEPS = ("sample", "label", "reward", "rm_accuracy", "ppo", "evaluate")


@dataclass
class Config(StageConfig):
    """Rounds of fresh comparisons on the current policy's samples, a retrained RM, and more PPO."""

    stage: ClassVar[str] = "iterate"

    sft_model: str = field(
        default="runs/tiny-sentiment/sft/model",
        metadata={"help": "The SFT model: PPO's KL reference in every round, and evaluation's baseline."},
    )
    policy: str = field(
        default="runs/tiny-sentiment/ppo/model",
        metadata={"help": "Round 0's policy (usually the pipeline's PPO model); round r starts from r-1's."},
    )
    reward_model: str = field(
        default="runs/tiny-sentiment/reward/model",
        metadata={"help": "Round 0's reward model; with reward_init: warm, round r's starts from r-1's."},
    )
    rounds: int = field(default=3, metadata={"help": "Rounds to run after round 0."})
    prompts: str = field(
        default="cache://datasets/sentiment/prompts_train.jsonl",
        metadata={
            "help": "Prompts to label; round r takes the r-th slice of prompts_per_round, never reused."
        },
    )
    prompts_per_round: int = field(default=64, metadata={"help": "Fresh prompts labeled per round."})
    completions_per_prompt: int = field(
        default=4, metadata={"help": "K: policy samples ranked per prompt (a K-way ranking)."}
    )
    earlier_policy_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of each prompt's K samples drawn from an earlier round's policy (one per prompt, at "
            "random; round 0's counts), as InstructGPT mixed policies in its comparisons. Round 1 has none."
        },
    )
    heldout_fraction: float = field(
        default=0.25,
        metadata={
            "help": "Share of each round's prompts kept out of RM training: the RM's accuracy on the new "
            "round's comparisons, before and after retraining, is measured on them."
        },
    )
    labeler: Literal["simulated", "app"] = field(
        default="simulated",
        metadata={
            "help": "simulated: `labeler_judge` plus Gaussian noise calibrated to `labeler_agreement` "
            "(reward/labeler.py). app: people rank the round's samples in the labeling app served with "
            "`app_config`; the round waits until every item has `app_overlap` answers or an admin closes it."
        },
    )
    app_config: str | None = field(
        default=None,
        metadata={
            "help": "labeler: app: the labeling app's YAML (what `alignment label --config` serves): the round's "
            "items go into its database, and its `overlap` is the default for app_overlap."
        },
    )
    app_overlap: int | None = field(
        default=None,
        metadata={
            "help": "labeler: app: answers (rankings, or all unacceptable) each item needs before the round ends; "
            "null: the app's `overlap`. At most that: the app gives an item to no more labelers."
        },
    )
    app_poll_seconds: float = field(
        default=10.0, metadata={"help": "labeler: app: how often the waiting round reads the progress."}
    )
    app_timeout_minutes: float | None = field(
        default=None,
        metadata={
            "help": "labeler: app: stop waiting after this long with an error (run again to keep waiting: items "
            "are loaded once, answers kept); null: wait until the round is complete or closed."
        },
    )
    labeler_judge: str = field(default="vader", metadata={"help": "The simulated labeler's judge."})
    labeler_agreement: float = field(
        default=0.73,
        metadata={"help": "Share of judge-ordered pairs the simulated labeler orders the same way."},
    )
    reward_init: Literal["warm", "scratch"] = field(
        default="warm",
        metadata={
            "help": "warm: round r's RM starts from round r-1's; scratch: from reward_base_model each round."
        },
    )
    reward_base_model: str = field(
        default="cache://models/minilm-l6-v2", metadata={"help": "Backbone for reward_init: scratch."}
    )
    recipes: dict = field(
        default_factory=lambda: {
            "reward": "configs/reward/minilm.yaml",
            "ppo": "configs/ppo/tiny.yaml",
            "evaluate": "configs/evaluate/tiny.yaml",
        },
        metadata={"help": "reward/ppo/evaluate -> recipe YAML each round's stage runs with."},
    )
    overrides: dict = field(
        default_factory=dict,
        metadata={"help": "reward/ppo/evaluate -> {key: value}: options for that stage in every round."},
    )
    prompt_template: str | None = field(
        default="Finish this movie review briefly: {prompt}",
        metadata={
            "help": "How the policy is asked (as in PPO); the labeler reads the raw prompt + response."
        },
    )
    use_chat_template: bool = field(default=True, metadata={"help": "Ask in the policy's chat template."})
    max_new_tokens: int = field(default=24, metadata={"help": "Response length limit when sampling."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    max_prompt_length: int = field(
        default=64, metadata={"help": "Prompts are truncated to this many tokens."}
    )
    batch_size: int = field(default=32, metadata={"help": "Prompts per sampling / scoring batch."})

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        require(self.rounds >= 1, "rounds", ">= 1", self.rounds)
        require(self.prompts_per_round >= 2, "prompts_per_round", ">= 2", self.prompts_per_round)
        require(
            self.completions_per_prompt >= 2, "completions_per_prompt", ">= 2", self.completions_per_prompt
        )
        require(
            0 <= self.earlier_policy_share < 1, "earlier_policy_share", "in [0, 1)", self.earlier_policy_share
        )
        require(0 < self.heldout_fraction < 1, "heldout_fraction", "in (0, 1)", self.heldout_fraction)
        require(0.5 < self.labeler_agreement <= 1, "labeler_agreement", "in (0.5, 1]", self.labeler_agreement)
        require(self.max_new_tokens >= 1, "max_new_tokens", ">= 1", self.max_new_tokens)
        require(
            self.temperature > 0, "temperature", "> 0 (a ranking needs different samples)", self.temperature
        )
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        check_judge_spec(self.labeler_judge, "labeler_judge")
        if self.labeler == "app":
            self.check_app()
        check_template(self.prompt_template, "prompt_template")
        for key in ("recipes", "overrides"):
            for stage, value in getattr(self, key).items():
                require(
                    stage in ("reward", "ppo", "evaluate"), f"{key}.{stage}", "reward, ppo or evaluate", stage
                )
                if key == "overrides":
                    require(
                        isinstance(value, dict), f"overrides.{stage}", "a mapping of option -> value", value
                    )

    def check_app(self) -> None:
        """The app-labeler keys, and the app config itself (read now, so a typo fails before any sampling)."""
        require(bool(self.app_config), "app_config", "the labeling app's YAML file with labeler: app", None)
        require(
            self.completions_per_prompt <= MAX_RANKED_COMPLETIONS,
            "completions_per_prompt",
            f"at most {MAX_RANKED_COMPLETIONS} with labeler: app (the most candidates the app shows)",
            self.completions_per_prompt,
        )
        require(self.app_poll_seconds > 0, "app_poll_seconds", "> 0", self.app_poll_seconds)
        if self.app_timeout_minutes is not None:
            require(
                self.app_timeout_minutes > 0, "app_timeout_minutes", "> 0 or null", self.app_timeout_minutes
            )
        app_overlap = self.app_label_config().overlap
        if self.app_overlap is not None:
            require(
                1 <= self.app_overlap <= app_overlap,
                "app_overlap",
                f"1 to the app's overlap ({app_overlap} in {self.app_config})",
                self.app_overlap,
            )

    def app_label_config(self) -> LabelConfig:
        """The labeling app's config (reward.app.config.LabelConfig) from `app_config`; errors name the key."""
        try:
            return parse_config(LabelConfig, ["--config", str(self.app_config)])
        except ConfigError as err:
            raise ConfigError(f"app_config: {err}") from None
