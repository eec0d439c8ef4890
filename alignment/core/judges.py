"""Judges: functions that score a text with a float, independent of any model we trained.

Shared by evaluation (the gold judge), PPO (a verifiable reward instead of a reward model) and the
simulated labeler, so one name ("vader", "module:function") means the same function everywhere.

The gold judge is VADER's compound sentiment score (a lexicon and rules, deterministic, in [-1, 1]):
the reward model is trained on human ratings of the same kind of text, so VADER is an outside
measure that PPO cannot exploit directly. Any `Callable[[str], float]` is a judge; a config names
one as "vader", as "package.module:function", or as "classifier:<model folder>": a sequence classifier
trained by `alignment finetune`, with its own tokenizer (see `ClassifierJudge`).

Two answer checkers make verifiable rewards (see `AnswerJudge`): "answer" (the final answer extracted from
the response equals the row's `answer` after normalisation) and "reasoning_gym:<generator>" (reasoning-gym's
own `score_answer` for that generator on the extracted answer). Both give exactly 1.0 for a right answer,
and `alignment reason` measures checkpoints with the same two.

A judge that needs the data row a prompt came from (a verifier comparing a response with the row's
`answer`) sets `needs_reference = True` and is called as `judge(prompt, response, row)`; `score` calls
either kind the right way, so callers never need to know which one they hold.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path

from alignment.core.errors import ConfigError

Judge = Callable[[str], float]


def score(judge: Callable[..., float], prompt: str, response: str, row: dict | None = None) -> float:
    """The judge's score of `response` to `prompt`: on `prompt + response`, or with the row for a verifier."""
    if getattr(judge, "needs_reference", False):
        return float(judge(prompt, response, row or {}))
    return float(judge(prompt + response))


@functools.lru_cache(maxsize=1)
def _vader():
    # Lazy: the analyzer reads its lexicon file on construction; build it once per process.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(text: str) -> float:
    """VADER compound sentiment of `text`, in [-1, 1] (the gold judge)."""
    return float(_vader().polarity_scores(text)["compound"])


BUILTIN_JUDGES: dict[str, Judge] = {"vader": vader_compound}
CLASSIFIER_PREFIX = "classifier:"
ANSWER_JUDGE = "answer"
REASONING_GYM_PREFIX = "reasoning_gym:"


def check_judge_spec(spec: object, key: str = "judge") -> None:
    """Raise `ConfigError` naming `key` unless `spec` is a judge name this module can load.

    Called by every config that names a judge (evaluation, PPO, the simulated labeler), before anything
    runs; `load_judge` then imports it.
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{key}: expected a judge name, got {spec!r}")
    if spec in BUILTIN_JUDGES:
        return
    if spec.startswith(CLASSIFIER_PREFIX):
        if not spec[len(CLASSIFIER_PREFIX) :].strip():
            raise ConfigError(f"{key} {spec!r}: expected 'classifier:<model folder>'")
        return
    if spec == ANSWER_JUDGE:
        return
    if spec.startswith(REASONING_GYM_PREFIX):
        check_generator(spec[len(REASONING_GYM_PREFIX) :], f"{key} {spec!r}")
        return
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{key} {spec!r}: expected one of {sorted(BUILTIN_JUDGES)}, 'module:function', "
            f"'classifier:<model folder>', '{ANSWER_JUDGE}' or 'reasoning_gym:<generator>'"
        )


def load_judge(spec: str, key: str = "judge") -> Judge:
    """Resolve a judge name: a built-in ("vader") or "module:function" naming any `Callable[[str], float]`.

    Errors are `ConfigError`s that start with `key`, the config field that named the judge.
    """
    check_judge_spec(spec, key)
    if spec in BUILTIN_JUDGES:
        return BUILTIN_JUDGES[spec]
    if spec.startswith(CLASSIFIER_PREFIX):
        return ClassifierJudge(spec[len(CLASSIFIER_PREFIX) :].strip())
    if spec == ANSWER_JUDGE:
        return AnswerJudge()
    if spec.startswith(REASONING_GYM_PREFIX):
        return ReasoningGymJudge(spec[len(REASONING_GYM_PREFIX) :])
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key} {spec!r}: cannot import module {module_name!r} ({err})") from None
    judge = getattr(module, attr, None)
    if not callable(judge):
        raise ConfigError(f"{key} {spec!r}: module {module_name!r} has no callable {attr!r}")
    return judge


def judge_name(spec: str) -> str:
    """Short name of a judge for report keys ("vader", or the function name of "module:function")."""
    return spec.rpartition(":")[2] if ":" in spec else spec


# ---------------------------------------------------------------------------------------------
# A fine-tuned classifier as a judge


def load_classifier(path: str):
    """A saved sequence classifier and its own tokenizer, in eval mode: plain weights, prefix-tuned or a peft adapter.

    Errors are `ModelLoadError`s naming the folder.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignment.core.models import loading, model_folder
    from alignment.core.trainable import restore_prefix_tuning

    folder = Path(model_folder(path))
    with loading(f"classifier {folder}"):
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if (folder / "adapter_config.json").is_file():  # prompt tuning keeps its virtual tokens as an adapter
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(folder))
            weights = folder / "model.safetensors"
            if weights.is_file():
                from safetensors.torch import load_file

                restore_prefix_tuning(model, load_file(str(weights)))
    tokenizer.padding_side = "right"  # decoder classifiers read the last non-pad token
    return model.eval(), tokenizer


class ClassifierJudge:
    """Scores a text with a fine-tuned classifier: what PPO can use as a reward and evaluation as a judge.

    The score is the positive-class probability for two classes (class 1: `alignment finetune` orders the
    sentiment classes negative, positive), the raw output for regression (one output), and for K > 2 ordered
    classes (sentiment buckets) the expected class index scaled to [0, 1].
    """

    needs_reference = False

    def __init__(self, path: str, batch_size: int = 32):
        self.path = path
        self.model, self.tokenizer = load_classifier(path)
        self.batch_size = batch_size
        from alignment.core.models import max_positions

        self.max_length = min(max_positions(self.model.config) or 512, 512)

    def __call__(self, text: str) -> float:
        """The score of one text."""
        return self.score_texts([text])[0]

    def score_texts(self, texts: list[str]) -> list[float]:
        """Scores of many texts, in batches."""
        import torch

        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.no_grad():
                logits = self.model(**batch).logits.float()  # [batch, num_labels]
            scores += logits_to_scores(logits).tolist()
        return scores


def logits_to_scores(logits):
    """Classifier logits [batch, K] -> one score per text (see `ClassifierJudge`)."""
    import torch

    if logits.shape[-1] == 1:
        return logits[:, 0]
    probs = torch.softmax(logits, dim=-1)
    if logits.shape[-1] == 2:
        return probs[:, 1]
    classes = torch.arange(logits.shape[-1], dtype=probs.dtype)
    return (probs * classes).sum(-1) / (logits.shape[-1] - 1)


# ---------------------------------------------------------------------------------------------
# Answer checkers as judges (verifiable rewards)


def check_generator(name: str, key: str) -> None:
    """Raise `ConfigError` starting with `key` unless `name` is a reasoning-gym generator."""
    import difflib

    import reasoning_gym.factory  # lazy: importing it registers all generators (about 5 s)

    known = sorted(reasoning_gym.factory.DATASETS)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"{key}: unknown reasoning-gym generator {name!r} ({hint}{len(known)} are known, e.g. "
            f"{', '.join(known[:6])})"
        )


def reference_answer(row: dict, prompt: str) -> str:
    """The row's `answer` as a string; a `DatasetFormatError` naming the prompt when the row has none."""
    from alignment.core.errors import DatasetFormatError

    answer = row.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        shown = " ".join(prompt.split())[:60]
        raise DatasetFormatError(
            f"the row of prompt {shown!r} has no key 'answer': an answer-checking judge needs each prompt "
            "row to carry its reference answer ({prompt, answer, ...})"
        )
    return str(answer)


class AnswerJudge:
    """1.0 when the final answer extracted from the response equals the row's `answer`, else 0.0.

    Extraction and normalisation are `core.answers`: numbers compare by value, text after case folding.
    `extract` and `score_answer` are separate so that self-consistency can vote on extracted answers
    before scoring the winner.
    """

    needs_reference = True

    def extract(self, response: str, row: dict, which: str = "last") -> str | None:
        """The final answer stated in `response` (numeric when the row's answer is a number)."""
        from alignment.core.answers import answer_kind, extract_answer

        return extract_answer(response, answer_kind(reference_answer(row, row.get("prompt", ""))), which)

    def score_answer(self, answer: str | None, row: dict, prompt: str = "") -> float:
        """1.0 for an extracted answer equal to the row's answer, else 0.0."""
        from alignment.core.answers import answers_match

        return 1.0 if answers_match(answer, reference_answer(row, prompt)) else 0.0

    def __call__(self, prompt: str, response: str, row: dict) -> float:
        """The score of `response` to `prompt`, against the prompt's data row."""
        reference_answer(row, prompt)
        return self.score_answer(self.extract(response, row), row, prompt)


class ReasoningGymJudge(AnswerJudge):
    """reasoning-gym's own `score_answer` for one generator, on the answer extracted from the response.

    The generator's scorer decides what counts (some give partial credit below 1.0; all give exactly 1.0 for
    a right answer). It sees the row as a reasoning-gym entry: `question` (or the prompt), `answer`, and
    `metadata` when the row has it (a few scorers read it). `options` are the generator's settings, for
    scorers that read them (the default settings otherwise).
    """

    def __init__(self, generator: str, options: dict | None = None):
        import reasoning_gym

        check_generator(generator, f"reasoning_gym:{generator}")
        self.generator = generator
        self.dataset = reasoning_gym.create_dataset(generator, size=1, seed=0, **(options or {}))

    def score_answer(self, answer: str | None, row: dict, prompt: str = "") -> float:
        """reasoning-gym's score of an extracted answer (None scores as no answer)."""
        entry = {
            "question": row.get("question", row.get("prompt", prompt)),
            "answer": reference_answer(row, prompt),
            "metadata": row.get("metadata") or {},
        }
        return float(self.dataset.score_answer(answer=answer, entry=entry))
