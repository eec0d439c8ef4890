"""Math problems with worked solutions from reasoning-gym's offline generators."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tqdm import tqdm

from alignment.core.formats import write_jsonl
from alignment.prepare.cache import AssetError
from alignment.prepare.config import Config
from alignment.prepare.packages import run_pip

REASONING_REQUIREMENT = "reasoning-gym==0.1.25"

REASONING_GENERATORS = ("gsm_symbolic", "basic_arithmetic")


def reasoning_row(item: dict[str, Any]) -> dict[str, str]:
    """A reasoning-gym item as {prompt: question, completion: worked solution (or the answer), answer}."""
    metadata = item.get("metadata") or {}
    completion = metadata.get("answer_cot") or str(item["answer"])
    return {"prompt": item["question"], "completion": completion, "answer": str(item["answer"])}


def build_reasoning(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """datasets/reasoning/<generator>.jsonl from reasoning-gym's offline generators (seeded)."""
    if importlib.util.find_spec("reasoning_gym") is None:
        run_pip(["install", "--disable-pip-version-check", REASONING_REQUIREMENT], REASONING_REQUIREMENT)
        importlib.invalidate_caches()
    import reasoning_gym

    written = {}
    for generator in REASONING_GENERATORS:
        dataset = reasoning_gym.create_dataset(generator, size=config.reasoning_size, seed=config.seed)
        items = list(tqdm(dataset, desc=f"reasoning-gym {generator}", leave=False))
        # The generator's own scorer must accept the answers we store, or the data is not what we think.
        wrong = [
            i
            for i, item in enumerate(items[:20])
            if dataset.score_answer(answer=item["answer"], entry=item) < 1
        ]
        if wrong:
            raise AssetError(
                f"reasoning-gym {generator}: its scorer rejects the stored answer of items {wrong}"
            )
        path = staging / "datasets" / "reasoning" / f"{generator}.jsonl"
        written[f"{generator}.jsonl"] = write_jsonl((reasoning_row(item) for item in items), path)
    return {"rows": written}
