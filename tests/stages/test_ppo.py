"""PPO end to end on a tiny GPT-2: reward rises under a simple judge, KL is reported, resume is exact.

The judge rewards the letter "e" in the text: a random tiny policy emits it sometimes, so PPO has
something to reinforce within a few seconds on CPU.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.core.config import ConfigError, build_config
from alignment.core.errors import TrainingHalted
from alignment.core.logging import read_metrics
from alignment.ppo.config import Config
from alignment.ppo.train import run

JUDGES = """
def count_e(text):
    return text.count("e") / 4.0

def not_a_number(text):
    return float("nan")

def flat(text):
    return 0.0
"""

PROMPT_WORDS = [
    "the movie was",
    "a dull film",
    "i loved every",
    "the worst movie",
    "an excellent cast",
    "boring slow and",
    "happy people tell",
    "sad news came",
    "the acting was",
    "a charming story",
    "this comedy is",
    "far too long",
]


@pytest.fixture(scope="module")
def ppo_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ppo-data")
    (folder / "ppo_test_judges.py").write_text(JUDGES)
    with (folder / "prompts.jsonl").open("w") as f:
        for prompt in PROMPT_WORDS:
            f.write(json.dumps({"prompt": prompt}) + "\n")
    with (folder / "ptx.jsonl").open("w") as f:
        for prompt in PROMPT_WORDS:
            f.write(json.dumps({"text": prompt + " and the plot was good"}) + "\n")
    return folder


@pytest.fixture()
def judge_path(ppo_data, monkeypatch):
    monkeypatch.syspath_prepend(str(ppo_data))
    return ppo_data


def tiny_config(model_dir, data_dir, out_dir, **overrides) -> Config:
    values = dict(
        output_dir=str(out_dir),
        model=str(model_dir),
        reward_model=None,
        reward_fn="ppo_test_judges:count_e",
        train_data=str(data_dir / "prompts.jsonl"),
        eval_data=None,
        batch_size=16,
        mini_batch_size=8,
        ppo_epochs=2,
        max_new_tokens=10,
        learning_rate=3e-3,
        kl_coef=0.01,
        max_steps=4,
        progress_bar=False,
        sample_steps=0,
        value_model="policy_head",
        value_head_init="fresh",
    )
    values.update(overrides)
    return build_config(Config, values)


def test_reward_rises_and_kl_is_reported(tiny_model_dir, judge_path, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(
        tiny_model_dir,
        judge_path,
        out,
        max_steps=20,
        eval_data=str(judge_path / "prompts.jsonl"),
        max_eval_samples=12,
        value_model="separate",
        sample_steps=10,
        ppo_epochs=4,
    )
    final = run(config)
    rows = [r for r in read_metrics(out) if "reward/mean" in r]
    assert [r["step"] for r in rows] == list(range(1, 21))
    start = sum(r["score/mean"] for r in rows[:3]) / 3
    end = sum(r["score/mean"] for r in rows[-3:]) / 3
    assert end > start + 0.5, (start, end)  # the judge's score per response rose clearly
    assert all(math.isfinite(r["kl"]) and math.isfinite(r["loss"]) for r in rows)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference before any update
    assert rows[-1]["kl"] > 0.05
    for key in (
        "entropy",
        "clipfrac",
        "approx_kl",
        "value_loss",
        "explained_variance",
        "response/length",
        "response/eos_rate",
        "time/generation",
        "time/scoring",
        "time/training",
        "samples_per_s",
        "tokens_per_s",
        "kl/k1",
        "kl/k3",
        "reward/std",
    ):
        assert key in rows[-1], key
    assert final["eval/score_end"] > final["eval/score_start"]
    # final policy saved with tokenizer and card, and it differs from where it started
    saved = load_file(str(out / "model" / "model.safetensors"))
    start_weights = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    key = "transformer.h.0.attn.c_attn.weight"
    assert not torch.allclose(saved[key], start_weights[key])
    assert (out / "model" / "README.md").exists() and (out / "model" / "tokenizer_config.json").exists()
    assert (out / "value_model" / "value_head.safetensors").exists()
    assert (out / "value_model" / "config.json").exists()
    assert (out / "samples.jsonl").exists()
    assert list((out / "tensorboard").iterdir())


def test_leave_one_out_baseline_without_a_critic_raises_the_score(tiny_model_dir, judge_path, tmp_path):
    # Four responses to each of four prompts per step; each is judged against its three siblings.
    out = tmp_path / "rloo"
    config = tiny_config(
        tiny_model_dir,
        judge_path,
        out,
        max_steps=20,
        ppo_epochs=4,
        value_model="none",
        advantage_estimator="rloo",
        samples_per_prompt=4,
        sample_steps=1,
    )
    run(config)
    rows = [r for r in read_metrics(out) if "reward/mean" in r]
    start = sum(r["score/mean"] for r in rows[:3]) / 3
    end = sum(r["score/mean"] for r in rows[-3:]) / 3
    assert end > start + 0.5, (start, end)
    assert "value_loss" not in rows[-1] and "explained_variance" not in rows[-1]
    assert (out / "model" / "model.safetensors").exists() and not (out / "value_model").exists()
    # the logged samples of a step are four responses to one prompt
    first = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    prompts = {line.split(" -> ")[0] for line in first["text"].splitlines()}
    assert len(prompts) == 1, first


def test_resume_continues_the_same_run(tiny_model_dir, judge_path, tmp_path):
    straight = tmp_path / "straight"
    run(tiny_config(tiny_model_dir, judge_path, straight, max_steps=4, save_steps=2))
    resumed = tmp_path / "resumed"
    run(tiny_config(tiny_model_dir, judge_path, resumed, max_steps=2))
    assert (resumed / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    run(tiny_config(tiny_model_dir, judge_path, resumed, max_steps=4, resume="auto"))
    a = {r["step"]: r for r in read_metrics(straight)}
    b = {r["step"]: r for r in read_metrics(resumed)}
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in ("reward/mean", "kl", "loss", "value_loss", "entropy", "response/length"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-6), (step, key)


def test_held_out_gold_picks_the_saved_policy_and_resume_chooses_the_same(
    tiny_model_dir, judge_path, tmp_path
):
    held_out = dict(
        eval_data=str(judge_path / "prompts.jsonl"),
        max_eval_samples=8,
        eval_steps=2,
        eval_judge="ppo_test_judges:count_e",
        select_by="gold",
        save_steps=2,
    )
    straight = tmp_path / "straight"
    final = run(tiny_config(tiny_model_dir, judge_path, straight, max_steps=6, **held_out))
    evals = [r for r in read_metrics(straight) if "eval/gold" in r]
    assert [r["step"] for r in evals] == [0, 2, 4, 6]
    for r in evals:
        assert r["eval/sqrt_kl"] == pytest.approx(math.sqrt(max(r["eval/kl"], 0.0)))
        assert "eval/score_raw" in r
    assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at step 0
    best = max(evals, key=lambda r: r["eval/gold"])  # the first of equals, as the run keeps it
    assert final["selected_step"] == best["step"] and final["eval/gold_selected"] == best["eval/gold"]
    saved = load_file(str(straight / "model" / "model.safetensors"))
    kept = load_file(str(straight / "checkpoints" / "checkpoint-6" / "best_policy.safetensors"))
    key = "transformer.h.0.attn.c_attn.weight"
    assert torch.equal(saved[key], kept[key])

    resumed = tmp_path / "resumed"
    run(tiny_config(tiny_model_dir, judge_path, resumed, max_steps=4, **held_out))
    again = run(tiny_config(tiny_model_dir, judge_path, resumed, max_steps=6, resume="auto", **held_out))
    assert again["selected_step"] == final["selected_step"]
    gold = {r["step"]: r["eval/gold"] for r in read_metrics(resumed) if "eval/gold" in r}
    assert gold == pytest.approx({r["step"]: r["eval/gold"] for r in evals}, abs=1e-6)
    resaved = load_file(str(resumed / "model" / "model.safetensors"))
    assert torch.allclose(resaved[key], saved[key], atol=1e-6)


def test_a_held_out_reward_model_chooses_the_saved_policy_where_no_gold_judge_exists(
    tiny_model_dir, judge_path, tmp_path
):
    """select_by: gold with a reward model (trained on other comparisons) as the judge: Bai et al.'s test RM."""
    from alignment.core.judges import load_judge
    from reward.model import build_reward_model, load_reward_model, score_texts

    torch.manual_seed(3)
    held_out_rm = tmp_path / "held-out-rm"
    model, tokenizer = build_reward_model(str(tiny_model_dir))
    model.save_pretrained(held_out_rm)
    tokenizer.save_pretrained(held_out_rm)
    texts = ["the movie was good", "a dull film", "i"]
    judge = load_judge(f"classifier:{held_out_rm}", "eval_judge")
    expected = score_texts(*load_reward_model(str(held_out_rm)), texts)
    assert [judge(t) for t in texts] == pytest.approx(expected.tolist(), abs=1e-5)  # scored as the RM scores

    out = tmp_path / "run"
    final = run(
        tiny_config(
            tiny_model_dir,
            judge_path,
            out,
            max_steps=4,
            eval_data=str(judge_path / "prompts.jsonl"),
            max_eval_samples=8,
            eval_steps=1,
            eval_judge=f"classifier:{held_out_rm}",
            select_by="gold",
        )
    )
    evals = [r for r in read_metrics(out) if "eval/gold" in r]
    best = max(evals, key=lambda r: r["eval/gold"])
    assert [r["step"] for r in evals] == [0, 1, 2, 3, 4]
    assert final["selected_step"] == best["step"] and final["eval/gold_selected"] == best["eval/gold"]


def test_patience_stops_early_keeps_the_best_and_a_rerun_does_not_train_on(
    tiny_model_dir, judge_path, tmp_path
):
    out = tmp_path / "run"
    options = dict(
        max_steps=6,
        eval_data=str(judge_path / "prompts.jsonl"),
        max_eval_samples=4,
        eval_steps=1,
        eval_judge="ppo_test_judges:flat",  # never improves after the first evaluation
        select_by="gold",
        select_patience=2,
    )
    final = run(tiny_config(tiny_model_dir, judge_path, out, **options))
    assert final["steps"] == 2 and final["selected_step"] == 0
    saved = load_file(str(out / "model" / "model.safetensors"))
    start_weights = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    key = "transformer.h.0.attn.c_attn.weight"
    assert torch.equal(saved[key], start_weights[key])  # model/ is the policy of step 0
    rerun = run(tiny_config(tiny_model_dir, judge_path, out, resume="auto", **options))
    assert rerun["steps"] == 2
    assert max(r["step"] for r in read_metrics(out) if "reward/mean" in r) == 2


def test_resume_skips_damaged_checkpoints_and_says_which(tiny_model_dir, judge_path, tmp_path, capsys):
    straight = tmp_path / "straight"
    run(tiny_config(tiny_model_dir, judge_path, straight, max_steps=4))
    broken = tmp_path / "broken"
    run(tiny_config(tiny_model_dir, judge_path, broken, max_steps=3, save_steps=1, save_total_limit=5))
    checkpoints = broken / "checkpoints"
    # A kill can leave: truncated weights (3), a truncated RNG file (2), a save that never finished (a temp
    # folder), and half a line at the end of metrics.jsonl. Only checkpoint-1 is whole.
    weights = checkpoints / "checkpoint-3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    rng = checkpoints / "checkpoint-2" / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:50])
    (checkpoints / ".tmp-checkpoint-4").mkdir()
    with (broken / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss": 0.')
    capsys.readouterr()
    run(tiny_config(tiny_model_dir, judge_path, broken, max_steps=4, save_steps=1, save_total_limit=5))
    out = capsys.readouterr().out
    assert (
        "skipping checkpoint" in out
        and "checkpoint-3: model.safetensors: not a readable safetensors file (truncated" in out
    )
    assert "checkpoint-2: random_states_0.pkl: unreadable" in out and "resuming from" in out
    assert not (checkpoints / ".tmp-checkpoint-4").exists()
    a = {r["step"]: r for r in read_metrics(straight) if "loss" in r}
    b = {r["step"]: r for r in read_metrics(broken) if "loss" in r}
    assert sorted(b) == [1, 2, 3, 4]  # steps 2-3 were redone from checkpoint-1, and logged once
    for step in (2, 3, 4):
        for key in ("loss", "reward/mean", "kl"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-6), (step, key)


def test_lora_reference_ptx_and_first_ratio_is_one(tiny_model_dir, judge_path, tmp_path):
    out = tmp_path / "lora"
    run(
        tiny_config(
            tiny_model_dir,
            judge_path,
            out,
            max_steps=2,
            peft="lora",
            lora_r=4,
            ppo_epochs=1,
            mini_batch_size=16,
            learning_rate=1e-9,
            ptx_coef=0.5,
            ptx_data=str(judge_path / "ptx.jsonl"),
            kl_estimator="k3",
            adaptive_kl=True,
            target_kl=0.1,
            kl_horizon=100,
        )
    )
    rows = [r for r in read_metrics(out) if "reward/mean" in r]
    # With one mini-batch per epoch and a vanishing learning rate, the training forward must reproduce the
    # rollout log-probs exactly (left padding, positions, ptx padding all line up): ratio 1, nothing clipped.
    assert rows[0]["ratio"] == pytest.approx(1.0, abs=1e-5)
    assert rows[0]["approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["clipfrac"] == 0.0
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # adapter starts at zero: policy == reference
    assert rows[0]["ptx_loss"] > 0
    assert rows[1]["kl/coef"] < rows[0]["kl/coef"]  # KL below target: the adaptive controller lowers beta
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model_type"] == "gpt2"  # merged: a plain model, no adapter files
    assert not (out / "model" / "adapter_config.json").exists()


def test_ptx_stream_reads_every_text_once_per_pass_in_order_and_resumes_in_place(
    tiny_model_dir, judge_path, tmp_path, monkeypatch
):
    # ptx_batch_size (3) differs from the micro-batch (2 rollouts): the stream must still move 3 texts a
    # micro-batch. 2 steps x 2 epochs x 4 micro-batches x 3 texts = 48 reads = 4 passes over the 12 texts.
    from alignment.ppo.data import PtxSource, SeededOrder

    reads: list[str] = []
    original = PtxSource.texts_at
    monkeypatch.setattr(
        PtxSource,
        "texts_at",
        lambda self, positions: reads.extend(original(self, positions)) or original(self, positions),
    )
    common = dict(
        batch_size=8,
        mini_batch_size=4,
        gradient_accumulation_steps=2,
        ppo_epochs=2,
        ptx_coef=0.5,
        ptx_data=str(judge_path / "ptx.jsonl"),
        ptx_batch_size=3,
        save_steps=1,
    )
    run(tiny_config(tiny_model_dir, judge_path, tmp_path / "straight", max_steps=2, **common))
    texts = [json.loads(line)["text"] for line in (judge_path / "ptx.jsonl").read_text().splitlines()]
    order = SeededOrder(len(texts), seed=42)
    assert reads == [texts[order[p]] for p in range(48)]
    for start in range(0, 48, 12):
        assert sorted(reads[start : start + 12]) == sorted(texts)  # every text once per pass

    straight = list(reads)
    reads.clear()
    run(tiny_config(tiny_model_dir, judge_path, tmp_path / "resumed", max_steps=1, **common))
    run(tiny_config(tiny_model_dir, judge_path, tmp_path / "resumed", max_steps=2, **common))
    assert reads == straight  # step 2 of the resumed run reads exactly the texts the uninterrupted one read


def test_gradient_accumulation_matches_one_big_micro_batch(tiny_model_dir, judge_path, tmp_path):
    # Fixed-length responses make every micro-batch hold the same number of tokens, so the mean of the two
    # half-batch losses equals the full-batch loss, and the step-2 rollouts (after one update) must agree.
    common = dict(max_steps=2, ppo_epochs=1, mini_batch_size=8, min_new_tokens=10, value_model="separate")
    run(tiny_config(tiny_model_dir, judge_path, tmp_path / "ga1", gradient_accumulation_steps=1, **common))
    run(tiny_config(tiny_model_dir, judge_path, tmp_path / "ga2", gradient_accumulation_steps=2, **common))
    one, two = read_metrics(tmp_path / "ga1"), read_metrics(tmp_path / "ga2")
    for key in ("loss", "value_loss", "reward/mean", "kl"):
        assert two[1][key] == pytest.approx(one[1][key], rel=1e-4, abs=1e-5), key


def test_reward_model_with_stats(tiny_model_dir, judge_path, tmp_path):
    from reward.model import build_reward_model

    torch.manual_seed(0)
    rm, rm_tokenizer = build_reward_model(str(tiny_model_dir))
    rm_dir = tmp_path / "rm"
    rm.save_pretrained(rm_dir)
    rm_tokenizer.save_pretrained(rm_dir)
    (rm_dir / "reward_stats.json").write_text(json.dumps({"mean": 0.5, "std": 2.0, "eval_accuracy": 0.7}))
    out = tmp_path / "rm-run"
    final = run(
        tiny_config(
            tiny_model_dir,
            judge_path,
            out,
            max_steps=2,
            reward_fn=None,
            reward_model=str(rm_dir),
            value_model="separate",
            value_head_init="reward_head",
            missing_eos_penalty=1.0,
            score_clip=3.0,
        )
    )
    rows = [r for r in read_metrics(out) if "reward/mean" in r]
    # normalized with the stats: score = (raw - 0.5) / 2 - penalty for responses without EOS
    first = rows[0]
    expected = (first["score/raw_mean"] - 0.5) / 2.0 - (1 - first["response/eos_rate"])
    assert first["score/mean"] == pytest.approx(expected, abs=1e-4)
    assert math.isfinite(final["value_loss"])


def test_non_finite_reward_stops_with_checkpoint(tiny_model_dir, judge_path, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingHalted, match="non-finite scores"):
        run(tiny_config(tiny_model_dir, judge_path, out, reward_fn="ppo_test_judges:not_a_number"))
    assert (out / "checkpoints" / "checkpoint-0" / "trainer_state.json").exists()


def test_kl_ceiling_stops(tiny_model_dir, judge_path, tmp_path):
    out = tmp_path / "ceiling"
    with pytest.raises(TrainingHalted, match="kl_ceiling"):
        run(tiny_config(tiny_model_dir, judge_path, out, max_steps=6, kl_ceiling=1e-4, learning_rate=1e-2))


def test_kl_budget_stops_at_the_first_step_that_spends_it_and_resume_keeps_the_window(
    tiny_model_dir, judge_path, tmp_path
):
    options = dict(max_steps=6, learning_rate=1e-2, kl_budget_window=3, save_steps=2)
    free = tmp_path / "free"
    run(tiny_config(tiny_model_dir, judge_path, free, **options))
    kl = {r["step"]: r["kl"] for r in read_metrics(free) if "reward/mean" in r}
    window_mean = {step: sum(kl[s] for s in range(step - 2, step + 1)) / 3 for step in range(3, 7)}
    budget = max(window_mean[3], window_mean[4])
    expected = min(step for step, mean in window_mean.items() if mean >= budget)
    assert expected in (3, 4)

    capped = tmp_path / "capped"
    final = run(tiny_config(tiny_model_dir, judge_path, capped, kl_budget=budget, **options))
    assert final["steps"] == expected
    assert max(r["step"] for r in read_metrics(capped) if "reward/mean" in r) == expected
    assert (capped / "model" / "model.safetensors").exists()
    # the rerun of a finished run does not train on past its budget
    assert (
        run(tiny_config(tiny_model_dir, judge_path, capped, kl_budget=budget, **options))["steps"] == expected
    )

    # stopped after step 2 and resumed: only a restored window (steps 1-2) can stop it at step 3 or 4
    resumed = tmp_path / "resumed"
    run(tiny_config(tiny_model_dir, judge_path, resumed, **{**options, "max_steps": 2}))
    final = run(tiny_config(tiny_model_dir, judge_path, resumed, kl_budget=budget, resume="auto", **options))
    assert final["steps"] == expected


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="reward_model / reward_fn"):
        build_config(Config, {"reward_model": None})
    with pytest.raises(ConfigError, match="batch_size"):
        build_config(Config, {"batch_size": 10, "mini_batch_size": 4})
    with pytest.raises(ConfigError, match="ptx_data"):
        build_config(Config, {"ptx_coef": 0.1})
    with pytest.raises(ConfigError, match="reward_fn"):
        build_config(Config, {"reward_model": None, "reward_fn": "no_colon"})
    with pytest.raises(ConfigError, match="kl_estimator"):
        build_config(Config, {"kl_estimator": "k2"})
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        build_config(Config, {"advantage_estimator": "rloo"})
    with pytest.raises(ConfigError, match="value_model"):
        build_config(Config, {"value_model": "none"})
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        build_config(Config, {"batch_size": 32, "mini_batch_size": 8, "samples_per_prompt": 3})


@pytest.mark.parametrize("recipe", ["tiny.yaml", "smollm2-135m.yaml"])
def test_recipes_parse(recipe):
    from alignment.core.config import parse_config

    config = parse_config(Config, ["--config", str(Path(__file__).parents[2] / "configs" / "ppo" / recipe)])
    assert config.max_steps >= 1


def test_auto_precision_is_resolved_once_and_a_rerun_resumes(
    tiny_model_dir, judge_path, tmp_path, monkeypatch
):
    """`precision: auto` is written to config.yaml as what ran, so rerunning the same command resumes."""
    import yaml

    from alignment.ppo import session as ppo_session

    chosen = []
    monkeypatch.setattr(ppo_session, "resolve_precision", lambda p: chosen.append(p) or "bf16")
    out = tmp_path / "auto"
    run(tiny_config(tiny_model_dir, judge_path, out, max_steps=2, precision="auto"))
    assert yaml.safe_load((out / "config.yaml").read_text())["precision"] == "bf16"
    run(tiny_config(tiny_model_dir, judge_path, out, max_steps=3, precision="auto", resume="auto"))
    assert chosen == ["auto", "auto"]
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2, 3]
