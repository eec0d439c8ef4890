"""One round's comparisons: K samples per fresh prompt from the current policy, ranked, split by prompt."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from alignment.core.chat import format_prompt
from alignment.core.errors import DatasetFormatError
from alignment.core.formats import load_dataset_as
from alignment.core.generation import SamplingSettings, generate
from alignment.core.judges import load_judge
from alignment.core.models import load_causal_lm, load_tokenizer
from alignment.core.paths import resolve_path
from alignment.iterate.config import Config
from reward.data import load_preference_file
from reward.labeler import label_rows
from reward.model import load_reward_model, score_texts


def round_prompts(config: Config, round_number: int) -> list[str]:
    """Round r's slice of the prompt file: prompts are labeled once, never in two rounds."""
    dataset, _ = load_dataset_as(resolve_path(config.prompts), fmt="prompts")
    start = (round_number - 1) * config.prompts_per_round
    prompts = list(dataset["prompt"])[start : start + config.prompts_per_round]
    if len(prompts) < 2:
        raise DatasetFormatError(
            f"{config.prompts}: round {round_number} needs prompts {start + 1}..{start + config.prompts_per_round}, "
            f"but the file has {len(dataset)} (lower prompts_per_round or rounds)"
        )
    return prompts


@torch.no_grad()
def sample_texts(config: Config, policy: str, prompts: list[str], k: int, seed: int) -> list[list[str]]:
    """`k` sampled responses per prompt from `policy`, in prompt order."""
    tokenizer = load_tokenizer(policy, padding_side="left")
    model = load_causal_lm(policy, tokenizer).eval()
    settings = SamplingSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature)
    asked = [format_prompt(tokenizer, p, config.prompt_template, config.use_chat_template) for p in prompts]
    repeated = [a for a in asked for _ in range(k)]
    torch.manual_seed(seed)
    texts: list[str] = []
    for i in range(0, len(repeated), config.batch_size):
        batch = generate(
            model,
            tokenizer,
            repeated[i : i + config.batch_size],
            settings,
            max_prompt_length=config.max_prompt_length,
        )
        texts += batch.response_texts
    return [texts[index * k : (index + 1) * k] for index in range(len(prompts))]


def earlier_sample_count(config: Config, earlier: list[str] | None) -> int:
    """How many of each prompt's K samples come from an earlier policy (none without one)."""
    return round(config.earlier_policy_share * config.completions_per_prompt) if earlier else 0


def sample_completions(
    config: Config, policy: str, prompts: list[str], round_number: int, earlier: list[str] | None = None
) -> list[dict]:
    """K samples per fresh prompt from `policy`, some from an `earlier` round's policy (earlier_policy_share).

    InstructGPT ranked samples of several policies side by side, so the reward model keeps seeing the region
    an earlier policy occupied. Each prompt's earlier policy is drawn at random; a prompt left with fewer than
    2 distinct responses is dropped (two equal texts could not get two different ranks).
    """
    k = config.completions_per_prompt
    k_earlier = earlier_sample_count(config, earlier)
    seed = config.seed + round_number
    per_prompt = sample_texts(config, policy, prompts, k - k_earlier, seed)
    if k_earlier:
        chooser = random.Random(seed)
        chosen = [chooser.choice(earlier) for _ in prompts]
        for source in dict.fromkeys(chosen):
            indices = [i for i, c in enumerate(chosen) if c == source]
            for i, texts in zip(
                indices, sample_texts(config, source, [prompts[i] for i in indices], k_earlier, seed)
            ):
                per_prompt[i] = per_prompt[i] + texts
    rows = []
    for prompt, texts in zip(prompts, per_prompt):
        distinct = list(dict.fromkeys(t for t in texts if t.strip()))
        if len(distinct) >= 2:
            rows.append({"prompt": prompt, "completions": distinct, "round": round_number})
    return rows


def label(config: Config, rows: list[dict], round_number: int) -> tuple[list[dict], dict[str, float]]:
    """Rank every row's completions with the simulated labeler; each ranking keeps its round tag."""
    judge = load_judge(config.labeler_judge, "labeler_judge")
    ranked, stats = label_rows(rows, judge, config.labeler_agreement, seed=config.seed + round_number)
    return [{**r, "round": round_number} for r in ranked], stats


def split_heldout(rankings: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) by prompt: held-out rankings measure the RM on this round's data, never train it.

    Several labelers' rankings of one prompt (the app's overlap) stay on one side. With one ranking per
    prompt (the simulated labeler) this is a split of the rankings.
    """
    prompts = list(dict.fromkeys(r["prompt"] for r in rankings))
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    count = max(1, round(fraction * len(prompts)))
    held = {prompts[i] for i in order[:count]}
    return (
        [r for r in rankings if r["prompt"] not in held],
        [r for r in rankings if r["prompt"] in held],
    )


def pairwise_accuracy(reward_model: str, comparisons: Path, batch_size: int = 32) -> float:
    """Share of the file's pairs the reward model orders as the labeler did (ties count half)."""
    pairs = load_preference_file(str(comparisons))
    model, tokenizer = load_reward_model(reward_model)
    chosen = score_texts(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], batch_size=batch_size)
    rejected = score_texts(
        model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], batch_size=batch_size
    )
    wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return float(wins.mean())
