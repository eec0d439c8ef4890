"""The reasoning stage's configuration: which checkpoints, which tasks and modes, and the classification study."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from alignment.core.config import StageConfig, require
from alignment.core.errors import ConfigError
from alignment.core.judges import check_generator
from alignment.reason.prompts import MODES

# Keys a task spec may have (see alignment/reason/tasks.py for what each does).
TASK_KEYS = {
    "generator": "a reasoning-gym generator name",
    "file": "a JSONL file of {question, answer, solution?} rows",
    "options": "the generator's settings (a mapping)",
    "seed": "seed of the generator's test items (default: the config's seed)",
    "exemplar_file": "a JSONL file of {question, answer, solution?} exemplars instead of the pool",
    "solution_key": "metadata key holding a worked solution (default answer_cot)",
    "num_items": "test items for this task (default: num_items)",
    "max_new_tokens": "tokens for a direct answer (default: max_new_tokens)",
    "cot_max_new_tokens": "tokens for a reasoning path (default: cot_max_new_tokens)",
    "why": "a sentence for the report: why these settings",
}
DEFAULT_LABEL_WORDS = [["negative", "positive"], ["bad", "good"], ["terrible", "great"]]
DEFAULT_FORMATS = [
    "Review: {text}\nSentiment: {label}",
    "{text}\nThe sentiment of this review is {label}",
    "Text: {text}\nQuestion: Is the review above positive or negative?\nAnswer: {label}",
]


@dataclass
class Config(StageConfig):
    """Models x tasks x modes for reasoning, and zero/one/few-shot sentiment classification by label likelihood."""

    stage: ClassVar[str] = "reason"

    models: dict = field(
        default_factory=dict,
        metadata={
            "help": "Models to evaluate: name -> model folder (any causal LM folder or cache:// path)."
        },
    )
    tasks: dict = field(
        default_factory=dict,
        metadata={
            "help": "Reasoning tasks: name -> {generator: <reasoning-gym name>, options: {...}, seed} or "
            "{file: <JSONL of question, answer, solution?>}; optional exemplar_file, solution_key, num_items, "
            "max_new_tokens, cot_max_new_tokens, why (a sentence for the report). Empty: no reasoning tasks."
        },
    )
    modes: list[str] = field(
        default_factory=lambda: list(MODES),
        metadata={"help": f"Reasoning modes, any of {', '.join(MODES)}."},
    )
    num_items: int = field(default=200, metadata={"help": "Test items per task for the single-answer modes."})
    sc_items: int = field(
        default=100, metadata={"help": "Self-consistency runs on the first this many test items."}
    )
    shots: int = field(
        default=4, metadata={"help": "Exemplars (k) in few_shot, cot and self_consistency prompts."}
    )
    exemplar_pool: int = field(
        default=32, metadata={"help": "Pool the exemplars are drawn from (never a test item)."}
    )
    orders: int = field(
        default=1,
        metadata={
            "help": "Exemplar orders (shuffles) run for few_shot and cot: the spread over them is reported."
        },
    )
    num_samples: int = field(default=8, metadata={"help": "Self-consistency: N reasoning paths per item."})
    temperature: float = field(default=0.7, metadata={"help": "Self-consistency sampling temperature (> 0)."})
    top_k: int = field(default=0, metadata={"help": "Self-consistency top-k (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Self-consistency nucleus sampling (1.0 = off)."})
    max_new_tokens: int = field(default=12, metadata={"help": "Tokens for a direct answer."})
    cot_max_new_tokens: int = field(default=128, metadata={"help": "Tokens for a reasoning path."})
    answer_max_new_tokens: int = field(
        default=10,
        metadata={"help": "Tokens for zero-shot CoT's second stage (the answer after the trigger)."},
    )
    chat_template: Literal["auto", "chat", "plain"] = field(
        default="auto",
        metadata={
            "help": "auto: the model's chat template when its folder has one, else plain text; or force one."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per generation or scoring batch."})
    classify_data: str | None = field(
        default="cache://datasets/sentiment/snippets.jsonl",
        metadata={
            "help": "Human-rated snippets (text, mean_rating, split, source) for in-context classification; null to skip."
        },
    )
    classify_source: str | None = field(
        default="movie",
        metadata={"help": "Only snippets from this source (movie, amazon, nyt, tweets); null: all."},
    )
    classify_items: int = field(
        default=200, metadata={"help": "Held-out snippets classified (half of each class)."}
    )
    classify_min_rating: float = field(
        default=1.0,
        metadata={
            "help": "A snippet is positive at mean_rating >= this, negative at <= minus this; others are left out."
        },
    )
    classify_max_words: int = field(
        default=0, metadata={"help": "Leave out snippets longer than this many words (0: no limit)."}
    )
    classify_shots: list[int] = field(
        default_factory=lambda: [0, 1, 4],
        metadata={"help": "Exemplar counts to classify with (0 = zero-shot)."},
    )
    classify_orders: int = field(
        default=5,
        metadata={
            "help": "Exemplar orders per k (for k = 1, different exemplars): the spread over them is reported."
        },
    )
    label_words: list[list[str]] = field(
        default_factory=lambda: [list(w) for w in DEFAULT_LABEL_WORDS],
        metadata={
            "help": "[negative, positive] label words; the first pair is the main one, the rest the sweep."
        },
    )
    classify_formats: list[str] = field(
        default_factory=lambda: list(DEFAULT_FORMATS),
        metadata={
            "help": "Prompt formats with {text} and {label}; the first is the main one, the rest the sweep."
        },
    )
    calibrate: bool = field(
        default=True,
        metadata={"help": "Also report contextual calibration (Zhao et al. 2021) from the same scores."},
    )
    num_threads: int = field(
        default=0,
        metadata={"help": "torch threads (0: torch's default); 1 is steadier on a loaded 2-core CPU."},
    )
    progress_bar: bool = field(default=True, metadata={"help": "Show progress bars."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        for name, path in self.models.items():
            require(isinstance(path, str) and bool(path), f"models.{name}", "a model folder path", path)
        for name, spec in self.tasks.items():
            check_task_spec(str(name), spec)
        for mode in self.modes:
            require(mode in MODES, "modes", f"modes from {list(MODES)}", mode)
        require(self.num_items >= 1, "num_items", "an int >= 1", self.num_items)
        require(self.sc_items >= 1, "sc_items", "an int >= 1", self.sc_items)
        require(
            self.num_samples >= 1, "num_samples", "an int >= 1 (N reasoning paths per item)", self.num_samples
        )
        require(self.shots >= 0, "shots", "an int >= 0", self.shots)
        k_shot = {"few_shot", "cot", "self_consistency"} & set(self.modes)
        if k_shot and self.shots < 1:
            raise ConfigError(f"shots: modes {sorted(k_shot)} need at least 1 exemplar, got {self.shots}")
        require(
            self.exemplar_pool >= self.shots,
            "exemplar_pool",
            f"an int >= shots ({self.shots})",
            self.exemplar_pool,
        )
        require(self.orders >= 1, "orders", "an int >= 1", self.orders)
        require(
            self.temperature > 0, "temperature", "a number > 0 (self-consistency samples)", self.temperature
        )
        require(self.top_k >= 0, "top_k", "an int >= 0", self.top_k)
        require(0 < self.top_p <= 1, "top_p", "a number in (0, 1]", self.top_p)
        for key in ("max_new_tokens", "cot_max_new_tokens", "answer_max_new_tokens", "batch_size"):
            require(getattr(self, key) >= 1, key, "an int >= 1", getattr(self, key))
        require(self.classify_items >= 2, "classify_items", "an int >= 2", self.classify_items)
        require(
            self.classify_min_rating >= 0, "classify_min_rating", "a number >= 0", self.classify_min_rating
        )
        require(
            bool(self.classify_shots) and all(k >= 0 for k in self.classify_shots),
            "classify_shots",
            "a non-empty list of ints >= 0",
            self.classify_shots,
        )
        require(self.classify_max_words >= 0, "classify_max_words", "an int >= 0", self.classify_max_words)
        require(self.classify_orders >= 1, "classify_orders", "an int >= 1", self.classify_orders)
        require(
            bool(self.label_words), "label_words", "at least one [negative, positive] pair", self.label_words
        )
        for i, pair in enumerate(self.label_words):
            ok = len(pair) == 2 and all(w.strip() for w in pair) and pair[0].strip() != pair[1].strip()
            require(ok, f"label_words[{i}]", "two different non-empty words [negative, positive]", pair)
        require(bool(self.classify_formats), "classify_formats", "at least one format", self.classify_formats)
        for i, fmt in enumerate(self.classify_formats):
            ok = fmt.count("{text}") == 1 and fmt.endswith("{label}") and fmt.count("{label}") == 1
            require(ok, f"classify_formats[{i}]", "a format with one {text} that ends in {label}", fmt)
        require(self.num_threads >= 0, "num_threads", "an int >= 0", self.num_threads)
        require(self.device in ("auto", "cpu", "cuda"), "device", "'auto', 'cpu' or 'cuda'", self.device)

    def check_models(self) -> None:
        """Raise `ConfigError` unless there is a model to evaluate and something to evaluate it on."""
        require(bool(self.models), "models", "a mapping of at least one name -> model folder", self.models)
        if not self.tasks and not self.classify_data:
            raise ConfigError(
                "tasks / classify_data: nothing to evaluate (give reasoning tasks, classify_data or both)"
            )


def check_task_spec(name: str, spec: Any) -> None:
    """Raise `ConfigError` naming `tasks.<name>.<key>` for a malformed task spec (before anything loads)."""
    key = f"tasks.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: expected a mapping with `generator` or `file`, got {spec!r}")
    for k in spec:
        if k not in TASK_KEYS:
            raise ConfigError(f"{key}: unknown key {k!r}; valid keys: {', '.join(sorted(TASK_KEYS))}")
    if ("generator" in spec) == ("file" in spec):
        raise ConfigError(f"{key}: expected exactly one of `generator` (reasoning-gym) or `file` (JSONL)")
    if "generator" in spec:
        check_generator(str(spec["generator"]), f"{key}.generator")
    if not isinstance(spec.get("options", {}), dict):
        raise ConfigError(f"{key}.options: expected a mapping of generator settings, got {spec['options']!r}")
    for k in ("num_items", "max_new_tokens", "cot_max_new_tokens"):
        if k in spec and (not isinstance(spec[k], int) or isinstance(spec[k], bool) or spec[k] < 1):
            raise ConfigError(f"{key}.{k}: expected an int >= 1, got {spec[k]!r}")
