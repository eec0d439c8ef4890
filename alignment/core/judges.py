"""Judges: functions that score a text with a float, independent of any model we trained.

Shared by evaluation (the gold judge), PPO (a verifiable reward instead of a reward model) and the
simulated labeler, so one name ("vader", "module:function") means the same function everywhere.

The gold judge is VADER's compound sentiment score (a lexicon and rules, deterministic, in [-1, 1]):
the reward model is trained on human ratings of the same kind of text, so VADER is an outside
measure that PPO cannot exploit directly. Any `Callable[[str], float]` is a judge; a config names
one as "vader" or as "package.module:function".

A judge that needs the data row a prompt came from (a verifier comparing a response with the row's
`answer`) sets `needs_reference = True` and is called as `judge(prompt, response, row)`; `score` calls
either kind the right way, so callers never need to know which one they hold.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

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


def check_judge_spec(spec: object, key: str = "judge") -> None:
    """Raise `ConfigError` naming `key` unless `spec` is a judge name this module can load.

    Called by every config that names a judge (evaluation, PPO, the simulated labeler), before anything
    runs; `load_judge` then imports it.
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{key}: expected a judge name, got {spec!r}")
    if spec in BUILTIN_JUDGES:
        return
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key} {spec!r}: expected one of {sorted(BUILTIN_JUDGES)} or 'module:function'")


def load_judge(spec: str, key: str = "judge") -> Judge:
    """Resolve a judge name: a built-in ("vader") or "module:function" naming any `Callable[[str], float]`.

    Errors are `ConfigError`s that start with `key`, the config field that named the judge.
    """
    check_judge_spec(spec, key)
    if spec in BUILTIN_JUDGES:
        return BUILTIN_JUDGES[spec]
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
