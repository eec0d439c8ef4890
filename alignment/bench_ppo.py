"""`make bench-ppo`: our PPO against trl 1.12's PPOTrainer, same models and settings, interleaved runs.

    python scripts/benchmark_ppo.py [--sizes tiny,smollm2] [--pairs 3] [--out runs/bench-ppo]

For each size it builds one set of models from configs (random weights; no hub): a policy (also the
reference), and a sequence-classification model (the reward model, and the value model's start), with one
tokenizer. It installs trl==1.12.0 into its own throwaway virtualenv (`<out>/peer-venv`, never `.venv`;
TRL removed PPO in 1.13), then runs, `pairs` times in turn: ours, the peer with its per-update
`gc.collect()` calls replaced by no-ops, and the peer as shipped, each in a fresh process with
OMP_NUM_THREADS=1. A run is `updates` PPO steps; its rate is rollouts per second over the steps after
the first (warm-up). Reported: the median of the runs per side, the ratio to the peer without gc, each
side's time split (generation / scoring / training / other) and the load average before each run.

Settings both sides share: batch, mini-batches (one micro-batch each), PPO epochs, response length,
temperature 1 with no top-k/top-p, learning rate, KL coefficient, value model (a separate critic from the
reward model's weights), clip ranges 0.2, gamma 1, lambda 0.95. `SETTINGS_NOT_MATCHED` names the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from alignment.core.paths import REPO_ROOT, cache_dir

PEER_REQUIREMENTS = ["trl==1.12.0"]
# What the two trainers do differently that the benchmark could not make equal.
SETTINGS_NOT_MATCHED = [
    "peer: linear learning-rate decay over the run (ours: constant); no effect on speed",
    "peer: no gradient clipping in its loop (ours: clip at max_grad_norm 1.0, a few ms per step)",
    "peer: Adam(W) from the Trainer (weight decay 0); ours: torch Adam, eps 1e-5",
    "peer: value head initialised by its sequence-classification head; ours: a fresh zero head (no effect on speed)",
    "peer: responses always run to the longest in the batch; both stop at EOS (random weights rarely emit it)",
]
SIZES: dict[str, dict[str, Any]] = {
    # The demo's policy shape: GPT-2, 4 layers, d_model 128, a 4096-token byte-level BPE.
    "tiny": {"batch": 32, "mini_batches": 2, "new_tokens": 24, "updates": 6, "ppo_epochs": 2},
    # SmolLM2-135M's shape (Llama, 30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152), random weights.
    "smollm2": {"batch": 16, "mini_batches": 2, "new_tokens": 32, "updates": 3, "ppo_epochs": 2},
}


# ---------------------------------------------------------------------------------------------
# Models and prompts


def build_models(size: str, folder: Path) -> Path:
    """Policy, reward model (= value model's start), tokenizer and prompts for one size; built once."""
    if (folder / "prompts.jsonl").is_file():
        return folder
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    from alignment.core.formats import read_jsonl

    corpus = cache_dir() / "datasets" / "sentiment"
    if not (corpus / "prompts_train.jsonl").is_file():
        raise SystemExit(
            "bench-ppo: run `alignment prepare --only sentiment,smollm2` first (prompts and tokenizer)"
        )
    torch.manual_seed(0)
    if size == "tiny":
        from alignment.pretrain.tokenizer import train_bpe_tokenizer

        texts = [row["text"] for row in read_jsonl(corpus / "corpus_train.jsonl")][:3000]
        tokenizer = train_bpe_tokenizer(texts, 4096)
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=128,
            n_embd=128,
            n_layer=4,
            n_head=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        policy = GPT2LMHeadModel(config)
    else:
        tokenizer = AutoTokenizer.from_pretrained(cache_dir() / "models" / "smollm2-135m-instruct")
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        policy = LlamaForCausalLM(config)
    policy.save_pretrained(folder / "policy")
    tokenizer.save_pretrained(folder / "policy")
    config.num_labels = 1
    reward = AutoModelForSequenceClassification.from_config(config)
    reward.save_pretrained(folder / "reward")
    tokenizer.save_pretrained(folder / "reward")
    prompts = [row["prompt"] for row in read_jsonl(corpus / "prompts_train.jsonl")]
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return folder


# ---------------------------------------------------------------------------------------------
# The two sides


def peer_python(out: Path) -> Path:
    """The throwaway virtualenv's python with trl 1.12 beside our torch and transformers versions."""
    venv = out / "peer-venv"
    python = venv / "bin" / "python"
    if (
        python.is_file()
        and subprocess.run([python, "-c", "import trl.experimental.ppo"], capture_output=True).returncode == 0
    ):
        return python
    import accelerate
    import torch
    import transformers

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True)
    pinned = [f"transformers=={transformers.__version__}", f"accelerate=={accelerate.__version__}"]
    subprocess.run([*pip, *PEER_REQUIREMENTS, *pinned], check=True)
    return python


def run_ours(models: Path, size: str, out: Path) -> dict[str, Any]:
    """One run of our PPO (a fresh process); per-update seconds and split from its metrics.jsonl."""
    settings = SIZES[size]
    run_dir = out / "ours-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = {
        "model": str(models / "policy"),
        "reward_model": str(models / "reward"),
        "normalize_reward": "false",
        "value_model": "separate",
        "value_head_init": "fresh",
        "train_data": str(models / "prompts.jsonl"),
        "eval_data": "null",
        "batch_size": settings["batch"],
        "mini_batch_size": settings["batch"] // settings["mini_batches"],
        "ppo_epochs": settings["ppo_epochs"],
        "max_new_tokens": settings["new_tokens"],
        "max_prompt_length": 32,
        "temperature": 1.0,
        "learning_rate": 1e-5,
        "kl_coef": 0.05,
        "max_steps": settings["updates"],
        "save_model": "false",
        "save_steps": 0,
        "sample_steps": 0,
        "progress_bar": "false",
        "resume": "never",
        "output_dir": str(run_dir),
    }
    command = [sys.executable, "-m", "alignment.cli", "ppo", *[f"--{k}={v}" for k, v in overrides.items()]]
    _run(command)
    from alignment.core.logging import read_metrics

    rows = [row for row in read_metrics(run_dir) if "loss" in row]
    updates = []
    for before, after in zip(rows, rows[1:]):
        seconds = after["time"] - before["time"]
        split = {k: after[f"time/{k}"] for k in ("generation", "scoring", "training")}
        tokens = after["response/length"] * settings["batch"]
        updates.append(
            {"seconds": seconds, **split, "other": seconds - sum(split.values()), "tokens": tokens}
        )
    return {"updates": updates}


def run_peer(python: Path, models: Path, size: str, out: Path, gc: bool) -> dict[str, Any]:
    """One run of trl 1.12's PPOTrainer (a fresh process of the throwaway venv)."""
    settings = SIZES[size]
    result = out / f"peer-{'gc' if gc else 'nogc'}.json"
    command = [
        str(python),
        str(REPO_ROOT / "scripts" / "bench_trl_ppo.py"),
        f"--models={models}",
        f"--updates={settings['updates']}",
        f"--batch_size={settings['batch']}",
        f"--mini_batches={settings['mini_batches']}",
        f"--ppo_epochs={settings['ppo_epochs']}",
        f"--new_tokens={settings['new_tokens']}",
        f"--out={result}",
        *([] if gc else ["--no_gc"]),
    ]
    _run(command)
    data = json.loads(result.read_text())
    updates = []
    for update in data["updates"][1:]:  # the first interval includes the trainer's own warm-up
        other = update.pop("gc")
        updates.append({**update, "other": other})
    return {"updates": updates}


def _run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench-ppo: {command[1]} failed:\n{(result.stdout + result.stderr)[-3000:]}")


# ---------------------------------------------------------------------------------------------
# Summary


def summarize(runs: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """Median rollouts/s and tokens/s over runs, and the mean split per update."""
    rates, token_rates, splits = [], [], []
    for run in runs:
        updates = run["updates"]
        seconds = sum(u["seconds"] for u in updates)
        rates.append(batch * len(updates) / seconds)
        tokens = [u["tokens"] for u in updates if u.get("tokens") is not None]
        token_rates.append(sum(tokens) / seconds if len(tokens) == len(updates) else None)
        splits.append(
            {
                k: statistics.mean(u[k] for u in updates)
                for k in ("generation", "scoring", "training", "other")
            }
        )
    return {
        "samples_per_s": statistics.median(rates),
        "runs_samples_per_s": rates,
        "tokens_per_s": statistics.median(t for t in token_rates if t is not None)
        if all(token_rates)
        else None,
        "split_s": {k: statistics.mean(s[k] for s in splits) for k in splits[0]},
        "load_before": [run["load"] for run in runs],
    }


def render(results: dict[str, Any]) -> str:
    """The markdown report."""
    lines = ["# PPO throughput: ours against trl 1.12's PPOTrainer", ""]
    lines += [f"Every run: a fresh process, OMP_NUM_THREADS=1; {results['cpu']}.", ""]
    for size, sides in results["sizes"].items():
        settings = SIZES[size]
        lines += [
            f"## {size}: batch {settings['batch']}, {settings['new_tokens']} new tokens, {settings['ppo_epochs']} PPO "
            f"epochs, {settings['mini_batches']} mini-batches, {settings['updates'] - 1} timed updates per run",
            "",
            "| side | samples/s (median) | runs | tokens/s | ours / side | generation s | scoring s | training s | other s | load before runs |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        ours = sides["ours"]["samples_per_s"]
        for name, s in sides.items():
            split = s["split_s"]
            runs = ", ".join(f"{r:.2f}" for r in s["runs_samples_per_s"])
            tokens = f"{s['tokens_per_s']:.0f}" if s["tokens_per_s"] else "-"
            loads = ", ".join(f"{x:.2f}" for x in s["load_before"])
            lines.append(
                f"| {name} | {s['samples_per_s']:.2f} | {runs} | {tokens} | {ours / s['samples_per_s']:.2f} | "
                f"{split['generation']:.3f} | {split['scoring']:.3f} | {split['training']:.3f} | {split['other']:.3f} | {loads} |"
            )
        lines.append("")
    lines += ["Settings the benchmark could not match:", ""] + [f"- {s}" for s in SETTINGS_NOT_MATCHED]
    lines += [
        "",
        "Peer 'other' is its gc.collect() time (no-ops in 'trl (gc removed)'); ours is logging and stats.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Build, install, run interleaved, report."""
    parser = argparse.ArgumentParser(description="Benchmark our PPO against trl 1.12's PPOTrainer.")
    parser.add_argument("--sizes", default="tiny,smollm2")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench-ppo"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    python = peer_python(out)
    results: dict[str, Any] = {"cpu": _cpu(), "sizes": {}}
    for size in [s for s in args.sizes.split(",") if s]:
        if size not in SIZES:
            raise SystemExit(f"bench-ppo: --sizes: expected names from {sorted(SIZES)}, got {size!r}")
        models = build_models(size, out / size / "models")
        runs: dict[str, list] = {"ours": [], "trl (gc removed)": [], "trl as shipped": []}
        for pair in range(args.pairs):
            for name in runs:
                load = os.getloadavg()[0]
                started = time.perf_counter()
                if name == "ours":
                    run = run_ours(models, size, out / size)
                else:
                    run = run_peer(python, models, size, out / size, gc=name == "trl as shipped")
                run["load"] = load
                runs[name].append(run)
                print(
                    f"[bench-ppo] {size} pair {pair + 1} {name}: {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
        batch = SIZES[size]["batch"]
        results["sizes"][size] = {name: summarize(r, batch) for name, r in runs.items()}
        (out / "results.json").write_text(json.dumps(results, indent=2))
    report = render(results)
    (out / "report.md").write_text(report)
    print(report)


def _cpu() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    return f"{os.cpu_count()} cores of {model}"


if __name__ == "__main__":
    main()
