"""In-context classification (Brown et al. 2020): zero/one/few-shot sentiment by the likelihood of label words.

Nothing is sampled. A prompt is k labelled exemplars rendered in a format ("Review: {text}", a line break,
"Sentiment: {label}"), then the test text in the same format up to its label; the predicted class is the label word with the
highest log-likelihood as the continuation, log p(word | prompt) = sum of its tokens' log-probs. The
exemplars are the same for every test text of a prompt variant, so their KV cache is computed once and
shared (`shared_prefix_cache`).

Contextual calibration (Zhao et al. 2021) is computed from the same scores: the label probabilities the
prompt gives to content-free inputs ("N/A", "", "[MASK]"), averaged, divide the test text's label
probabilities before the argmax (W = diag(p_cf)^-1, b = 0), which removes the prompt's bias toward a label.

Sensitivity: accuracy over several exemplar orders (for one shot, several exemplars), over label words and
over prompt formats, each varied alone around the main prompt.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignment.core.errors import DatasetFormatError
from alignment.core.formats import read_jsonl
from alignment.core.paths import resolve_path
from alignment.core.tokens import position_ids_from_mask, token_logprobs

CONTENT_FREE = ("N/A", "", "[MASK]")
CLASSES = ("negative", "positive")  # class 0 and class 1; label words are given in this order


@dataclass
class Snippet:
    """A rated text and its class (0 negative, 1 positive)."""

    text: str
    label: int
    rating: float


@dataclass
class Variant:
    """One prompt: k exemplars in an order, a pair of label words, a format; `axis` says what it varies."""

    shots: int
    axis: str  # "main", "order", "label_words" or "format"
    index: int  # which order / label-word pair / format along the axis
    exemplars: list[Snippet]
    words: list[str]
    fmt: str

    @property
    def name(self) -> str:
        """A key for the report: k, axis and index."""
        return f"k{self.shots}/{self.axis}{self.index}"


def load_snippets(
    source: str, only_source: str | None, min_rating: float, n_test: int, seed: int, max_words: int = 0
) -> tuple[list[Snippet], list[Snippet]]:
    """(test snippets: `split == heldout`, half of each class; exemplar pool: `split == train`).

    A snippet is positive at mean_rating >= min_rating, negative at <= -min_rating; snippets in between are
    left out (their human label is unclear), and so are snippets over `max_words` words (0: no limit; for
    models with few positions). Test and pool are seeded samples, classes balanced so chance accuracy is 0.5.
    """
    path = Path(resolve_path(source))
    if not path.is_file():
        hint = " (run `alignment prepare` first)" if source.startswith("cache://") else ""
        raise DatasetFormatError(f"classify_data: {path} does not exist{hint}")
    by_split: dict[str, list[list[Snippet]]] = {"heldout": [[], []], "train": [[], []]}
    for number, row in enumerate(read_jsonl(path), start=1):
        for key, kinds in (("text", str), ("mean_rating", (int, float)), ("split", str)):
            if not isinstance(row.get(key), kinds) or isinstance(row.get(key), bool):
                raise DatasetFormatError(
                    f"{path}: row {number}: key {key!r}: expected a {key} value, got {row.get(key)!r}"
                )
        if only_source is not None and row.get("source") != only_source:
            continue
        rating = float(row["mean_rating"])
        too_long = max_words and len(row["text"].split()) > max_words
        if row["split"] not in by_split or abs(rating) < min_rating or not row["text"].strip() or too_long:
            continue
        by_split[row["split"]][int(rating > 0)].append(
            Snippet(" ".join(row["text"].split()), int(rating > 0), rating)
        )
    rng = random.Random(seed)
    test = []
    for label in (0, 1):
        pool = by_split["heldout"][label]
        want = n_test // 2 + (n_test % 2 if label == 1 else 0)
        if len(pool) < want:
            raise DatasetFormatError(
                f"classify_data: {path} has {len(pool)} held-out {CLASSES[label]} snippets "
                f"(source {only_source!r}, |rating| >= {min_rating}); classify_items {n_test} needs {want}"
            )
        test += rng.sample(pool, want)
    rng.shuffle(test)
    exemplars = [s for label in (0, 1) for s in by_split["train"][label]]
    if not by_split["train"][0] or not by_split["train"][1]:
        raise DatasetFormatError(
            f"classify_data: {path} needs training snippets of both classes for exemplars"
        )
    rng.shuffle(exemplars)
    return test, exemplars


def draw_exemplars(pool: list[Snippet], k: int, rng: random.Random) -> list[Snippet]:
    """K exemplars, classes as balanced as k allows (the odd one's class drawn at random), in random order."""
    by_class = [[s for s in pool if s.label == c] for c in (0, 1)]
    counts = [k // 2, k // 2]
    if k % 2:
        counts[rng.randrange(2)] += 1
    chosen = [s for c in (0, 1) for s in rng.sample(by_class[c], counts[c])]
    rng.shuffle(chosen)
    return chosen


def variants(
    shots: Iterable[int],
    pool: list[Snippet],
    orders: int,
    label_words: list[list[str]],
    formats: list[str],
    seed: int,
) -> list[Variant]:
    """Every prompt variant: per k, exemplar orders, then label words and formats each varied alone.

    Per k: `orders` exemplar orders (k = 1: different exemplars), then each other label-word pair and each
    other format with the first order. The main prompt is order 0, words 0, format 0.
    """
    out = []
    for k in shots:
        rng = random.Random(seed + 7919 * k)
        base = draw_exemplars(pool, k, rng)
        orderings = [base]
        for _ in range(orders - 1 if k >= 1 else 0):
            if k == 1:  # one exemplar has one order: vary which exemplar instead
                orderings.append(draw_exemplars(pool, 1, rng))
            else:
                orderings.append(rng.sample(base, len(base)))
        words, fmt = label_words[0], formats[0]
        out.append(Variant(k, "main", 0, base, words, fmt))
        out += [Variant(k, "order", i, o, words, fmt) for i, o in enumerate(orderings) if i > 0]
        out += [Variant(k, "label_words", i, base, w, fmt) for i, w in enumerate(label_words) if i > 0]
        out += [Variant(k, "format", i, base, words, f) for i, f in enumerate(formats) if i > 0]
    return out


def render(variant: Variant, text: str) -> tuple[str, list[str]]:
    """(context up to the label, one continuation per class): exemplars, blank lines, the test text.

    A space before the label belongs to the continuation (" positive"), as the model would write it.
    """
    head, _ = variant.fmt.split("{label}")
    blocks = [variant.fmt.format(text=e.text, label=variant.words[e.label]) for e in variant.exemplars]
    context = "\n\n".join([*blocks, head.format(text=text)])
    gap = context[len(context.rstrip(" ")) :]
    return context.rstrip(" "), [gap + w for w in variant.words]


def exemplar_prefix(variant: Variant) -> str:
    """The part of every prompt of a variant that its exemplars make up (encoded once, see the module docstring)."""
    blocks = [variant.fmt.format(text=e.text, label=variant.words[e.label]) for e in variant.exemplars]
    return "\n\n".join(blocks) + "\n\n" if blocks else ""


def shared_prefix_cache(model: torch.nn.Module, prefix_ids: list[int]):
    """The KV cache of `prefix_ids` (batch 1), or None for an empty prefix."""
    if not prefix_ids:
        return None
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    device = next(model.parameters()).device
    ids = torch.tensor([prefix_ids], device=device)
    model(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache, use_cache=True)
    return cache


@torch.no_grad()
def continuation_logprobs(
    model: torch.nn.Module,
    tokenizer: Any,
    contexts: list[str],
    continuations: list[str],
    prefix: str = "",
    batch_size: int = 16,
) -> torch.Tensor:
    """Log p(continuation | context) for every context and continuation, [len(contexts), len(continuations)].

    Each is the sum over the continuation's tokens of log pi(token | everything before it)
    (`core.tokens.token_logprobs`); context and continuation are encoded separately and joined as ids.
    `prefix`, a start all contexts share, is run once and its cache reused (dropped when a context's own
    tokens do not begin with the prefix's). When every continuation is one token, one forward pass per
    context scores them all from its last position.
    """
    device = next(model.parameters()).device
    context_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in contexts]
    continuation_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    if not all(
        c.startswith(prefix) and ids[: len(prefix_ids)] == prefix_ids and len(ids) > len(prefix_ids)
        for c, ids in zip(contexts, context_ids)
    ):
        prefix_ids = []
    cache = shared_prefix_cache(model, prefix_ids)
    remainders = [ids[len(prefix_ids) :] for ids in context_ids]
    single = all(len(ids) == 1 for ids in continuation_ids)
    scores = []
    if single:
        candidates = torch.tensor([ids[0] for ids in continuation_ids])
        for start in range(0, len(remainders), batch_size):
            rows = remainders[start : start + batch_size]
            logits, _ = _forward_rows(model, rows, len(prefix_ids), cache, device)
            last = logits[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])]  # [rows, vocab]
            n = len(candidates)
            scores.append(
                token_logprobs(last.unsqueeze(1).expand(-1, n, -1), candidates.expand(len(rows), n))
            )
        return torch.cat(scores)
    pairs = [(i, j) for i in range(len(remainders)) for j in range(len(continuation_ids))]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = [remainders[i] + continuation_ids[j] for i, j in chunk]
        logits, input_ids = _forward_rows(model, rows, len(prefix_ids), cache, device)
        next_logprobs = token_logprobs(logits[:, :-1], input_ids[:, 1:])  # [rows, width - 1]: token t + 1
        for row, (i, j) in enumerate(chunk):
            first = len(remainders[i]) - 1  # the position that predicts the continuation's first token
            scores.append(next_logprobs[row, first : first + len(continuation_ids[j])].sum())
    return torch.stack(scores).view(len(contexts), len(continuations))


def _forward_rows(
    model: torch.nn.Module, rows: list[list[int]], prefix_len: int, cache, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [rows, width, vocab] on CPU in float32, input_ids [rows, width]) of right-padded rows after the prefix."""
    width = max(len(r) for r in rows)
    input_ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, prefix_len : prefix_len + len(row)] = 1
    kwargs: dict[str, Any] = {}
    if cache is not None:
        batch_cache = copy.deepcopy(
            cache
        )  # a forward pass appends to its cache: each batch needs its own copy
        batch_cache.batch_repeat_interleave(len(rows))
        kwargs = {"cache": batch_cache, "use_cache": True}
    logits = model(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=position_ids_from_mask(mask)[:, prefix_len:].to(device),
        **kwargs,
    ).logits
    return logits.float().cpu(), input_ids


def predictions(scores: torch.Tensor, calibration: torch.Tensor | None = None) -> list[int]:
    """Argmax class per row of label log-likelihoods [n, classes]; with calibration, of p / p_cf.

    `calibration` is p_cf [classes], the mean label distribution of the content-free inputs.
    """
    if calibration is None:
        return scores.argmax(dim=1).tolist()
    probs = torch.softmax(scores, dim=1)  # label probabilities renormalised over the label set
    return (probs / calibration).argmax(dim=1).tolist()


def content_free_distribution(cf_scores: torch.Tensor) -> torch.Tensor:
    """p_cf [classes]: the label distribution of each content-free input, renormalised, then averaged."""
    return torch.softmax(cf_scores, dim=1).mean(dim=0)


def classify_model(
    model: Any,
    tokenizer: Any,
    test: list[Snippet],
    pool: list[Snippet],
    settings: dict[str, Any],
    progress_bar: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every prompt variant on every test snippet: (the summary per k, one sample row per variant and snippet).

    `settings`: shots, orders, label_words, formats, calibrate (bool), batch_size, seed.
    """
    from tqdm import tqdm

    from alignment.core.models import check_length
    from alignment.reason.stats import accuracy_with_ci, spread

    labels = [s.label for s in test]
    all_variants = variants(
        settings["shots"],
        pool,
        settings["orders"],
        settings["label_words"],
        settings["formats"],
        settings["seed"],
    )
    by_shots: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for variant in tqdm(all_variants, desc="classification", disable=not progress_bar, leave=False):
        rendered = [render(variant, s.text) for s in test]
        contexts, continuations = [c for c, _ in rendered], rendered[0][1]
        longest = max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in contexts)
        check_length(longest + 8, "classify_shots", model, f"the model with {variant.shots}-shot prompts")
        prefix = exemplar_prefix(variant)
        scores = continuation_logprobs(
            model, tokenizer, contexts, continuations, prefix, settings["batch_size"]
        )
        raw = predictions(scores)
        calibrated, p_cf = [None] * len(raw), None
        if settings["calibrate"]:
            cf_contexts = [render(variant, text)[0] for text in CONTENT_FREE]
            cf_scores = continuation_logprobs(
                model, tokenizer, cf_contexts, continuations, prefix, settings["batch_size"]
            )
            p_cf = content_free_distribution(cf_scores)
            calibrated = predictions(scores, p_cf)
        result = {
            "name": variant.name,
            "axis": variant.axis,
            "index": variant.index,
            "label_words": variant.words,
            "format": variant.fmt,
            "exemplars": [{"text": e.text, "label": e.label} for e in variant.exemplars],
            "content_free_distribution": p_cf.tolist() if p_cf is not None else None,
            "raw": accuracy_with_ci(sum(p == y for p, y in zip(raw, labels)), len(labels)),
            "calibrated": (
                accuracy_with_ci(sum(p == y for p, y in zip(calibrated, labels)), len(labels))
                if p_cf is not None
                else None
            ),
            "predicted_positive_share": sum(raw) / len(raw),
        }
        by_shots.setdefault(str(variant.shots), {"variants": []})["variants"].append(result)
        for i, snippet in enumerate(test):
            rows.append(
                {
                    "kind": "classification",
                    "shots": variant.shots,
                    "variant": variant.name,
                    "item": i,
                    "prompt": contexts[i],
                    "continuations": continuations,
                    "text": snippet.text,
                    "label": snippet.label,
                    "label_logprobs": scores[i].tolist(),
                    "prediction": raw[i],
                    "prediction_calibrated": calibrated[i],
                    "correct": raw[i] == snippet.label,
                    "correct_calibrated": calibrated[i] == snippet.label,
                }
            )
    for summary in by_shots.values():
        main = next(v for v in summary["variants"] if v["axis"] == "main")
        summary["main"] = {"raw": main["raw"], "calibrated": main["calibrated"]}
        summary["spread"] = {}
        for axis in ("order", "label_words", "format"):
            group = [main] + [v for v in summary["variants"] if v["axis"] == axis]
            if len(group) > 1:
                summary["spread"][axis] = {
                    kind: spread([v[kind]["accuracy"] for v in group]) if group[0][kind] else None
                    for kind in ("raw", "calibrated")
                }
    return by_shots, rows
