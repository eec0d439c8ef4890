"""A careless user's inputs through the real `alignment` command: each gets one line, exit code 2, no traceback.

Every case runs `alignment.cli.main` (what the console script calls) in this process with output captured at
the file-descriptor level, then checks: exit code 2, the error is one line of stderr that names the file, row
or key, nothing on the console looks like a traceback, and the run folder holds nothing new but the resolved
config. A few cases also run as real subprocesses, so the console script itself is covered.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alignment.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("bad-inputs")
    demos = [{"prompt": "the film", "completion": " was great"}] * 4
    f = {
        "demos": write(d / "demos.jsonl", demos),
        "one_row": write(d / "one_row.jsonl", demos[:1]),
        "text_only": write(d / "text_only.jsonl", [{"text": "hello there"}] * 3),
        "empty_text": write(d / "empty_text.jsonl", [{"text": ""}, {"text": "   "}]),
        "pairs_no_chosen": write(d / "pairs_no_chosen.jsonl", [{"prompt": "p", "rejected": "b"}] * 3),
        "string_ranks": write(
            d / "string_ranks.jsonl",
            [{"prompt": "p", "completions": ["a", "b"], "ranks": [1, 2]}] * 2
            + [{"prompt": "q", "completions": ["a", "b"], "ranks": ["1", "2"]}],
        ),
        "mixed_completions": write(
            d / "mixed_completions.jsonl", [{"prompt": "p", "completions": ["a", 3], "ranks": [1, 2]}]
        ),
        "bad_snippets": write(
            d / "bad_snippets.jsonl", [{"text": "good", "split": "train", "source": "movie"}]
        ),
        "prompts": write(d / "prompts.jsonl", [{"prompt": "the film"}] * 4),
        "ft_labels": write(d / "ft_labels.jsonl", [{"text": "good", "label": "positive"}] * 3),
        "ft_no_label": write(
            d / "ft_no_label.jsonl", [{"text": "good", "label": "positive"}, {"text": "bad"}]
        ),
        "ft_neutral": write(
            d / "ft_neutral.jsonl",
            [{"text": "good", "label": "positive"}, {"text": "meh", "label": "neutral"}],
        ),
        "ft_word_target": write(
            d / "ft_word_target.jsonl", [{"text": "good", "label": 2.5}, {"text": "bad", "label": "low"}]
        ),
        "reason_no_answer": write(
            d / "reason_no_answer.jsonl", [{"question": "1 + 1?", "answer": "2"}, {"question": "2 + 2?"}]
        ),
    }
    (d / "latin1.jsonl").write_bytes(
        b'{"prompt": "a", "completion": " b"}\n{"prompt": "caf\xe9", "completion": " c"}\n'
    )
    f["latin1"] = str(d / "latin1.jsonl")
    (d / "broken.jsonl").write_text('{"prompt": "a", "completion": " b"}\n{"prompt": \n')
    f["broken"] = str(d / "broken.jsonl")
    (d / "empty.yaml").write_text("")
    f["empty_yaml"] = str(d / "empty.yaml")
    (d / "invalid.yaml").write_text("key: [unclosed\n")
    f["invalid_yaml"] = str(d / "invalid.yaml")
    truncated = d / "truncated_model"
    shutil.copytree(tiny_model_dir, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    f["truncated_model"] = str(truncated)
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "notes.txt").write_text("hello")
    f["not_a_model"] = str(d / "not_a_model")
    from reward.model import build_reward_model

    rm, rm_tokenizer = build_reward_model(str(tiny_model_dir))
    rm.save_pretrained(d / "rm_without_stats")  # a real reward model, saved without its reward_stats.json
    rm_tokenizer.save_pretrained(d / "rm_without_stats")
    f["rm_without_stats"] = str(d / "rm_without_stats")
    damaged = d / "damaged_checkpoint"
    damaged.mkdir()
    (damaged / "trainer_state.json").write_text("{")
    f["damaged_checkpoint"] = str(damaged)
    f["model"] = str(tiny_model_dir)
    return f


# (name, command and options, a fragment the one-line error must contain); {x} are filled from `files`.
SFT = ["sft", "--model", "{model}", "--train_data", "{demos}", "--eval_data", "null", "--max_steps", "1"]
PPO = [
    "ppo",
    "--model",
    "{model}",
    "--reward_model",
    "null",
    "--reward_fn",
    "vader",
    "--train_data",
    "{prompts}",
]
PPO += ["--eval_data", "null", "--max_steps", "1", "--batch_size", "4", "--mini_batch_size", "4"]
REWARD = ["reward", "--model", "{model}", "--max_steps", "1"]
PRETRAIN = ["pretrain", "--train_data", "{text_only}", "--eval_data", "null", "--max_steps", "2"]
EVALUATE = ["evaluate", "--models", "{{a: {model}}}", "--prompts", "{prompts}", "--perplexity_data", "null"]
FINETUNE = [
    "finetune",
    "--model",
    "{model}",
    "--dataset",
    "files",
    "--train_data",
    "{ft_labels}",
    "--max_steps",
    "1",
]
REASON = ["reason", "--models", "{{a: {model}}}", "--classify_data", "null", "--modes", "direct"]
CASES = [
    # configs: keys, types, values
    ("negative learning rate", [*SFT, "--learning_rate", "-1e-3"], "learning_rate: expected a number > 0"),
    ("infinite learning rate", [*SFT, "--learning_rate", "inf"], "learning_rate: expected a finite number"),
    ("NaN in a float", [*SFT, "--weight_decay", "nan"], "weight_decay: expected a finite number"),
    ("negative clip norm", [*SFT, "--max_grad_norm", "-1"], "max_grad_norm"),
    ("negative checkpoint limit", [*SFT, "--save_total_limit", "-1"], "save_total_limit"),
    ("zero sample length", [*SFT, "--sample_max_new_tokens", "0"], "sample_max_new_tokens"),
    ("unknown key", [*SFT, "--learning_rat", "1e-4"], "unknown key 'learning_rat'"),
    ("wrong type", [*SFT, "--max_steps", "three"], "max_steps: expected int"),
    ("zero max_steps", [*SFT[:-1], "0"], "max_steps"),
    ("warm-up over 1", [*SFT, "--warmup_ratio", "1.5"], "warmup_ratio"),
    ("empty resume", [*SFT, "--resume", ""], "resume"),
    ("a folder as --config", ["sft", "--config", "configs"], "is a folder"),
    ("missing --config", ["sft", "--config", "nope.yaml"], "nope.yaml does not exist"),
    ("empty YAML", ["sft", "--config", "{empty_yaml}"], "is empty"),
    ("invalid YAML", ["sft", "--config", "{invalid_yaml}"], "not valid YAML"),
    (
        "PPO infinite learning rate",
        [*PPO, "--learning_rate", "inf"],
        "learning_rate: expected a finite number",
    ),
    ("PPO unknown judge", [*PPO, "--reward_fn", "gpt4"], "reward_fn 'gpt4'"),
    ("PPO batch not a multiple", [*PPO, "--batch_size", "10", "--mini_batch_size", "4"], "batch_size"),
    ("PPO KL estimator", [*PPO, "--kl_estimator", "k2"], "kl_estimator"),
    ("pretrain heads", [*PRETRAIN, "--n_head", "3"], "n_head"),
    ("pretrain objective vs architecture", [*PRETRAIN, "--objective", "masked_lm"], "architecture"),
    ("reward sources", [*REWARD, "--sources", "movie,books"], "sources"),
    ("evaluate without models", ["evaluate"], "models"),
    ("evaluate unknown judge", [*EVALUATE, "--judges", "[gpt4]"], "judges[0]"),
    ("evaluate CUDA on a CPU machine", [*EVALUATE, "--device", "cuda"], "device: 'cuda'"),
    ("pipeline output_dir", ["pipeline", "--output_dir", "{tmp}/elsewhere"], "output_dir"),
    (
        "pipeline late-stage option",
        ["pipeline", "--overrides", "{{evaluate: {{temperature: -1}}}}"],
        "stage 'evaluate'",
    ),
    ("prepare unknown asset", ["prepare", "--only", "imdb"], "only: unknown asset"),
    ("label port", ["label", "--port", "0"], "port"),
    # datasets
    ("non-UTF-8 JSONL", [*SFT[:4], "{latin1}", *SFT[5:]], "latin1.jsonl: line 2: not UTF-8"),
    ("malformed JSONL", [*SFT[:4], "{broken}", *SFT[5:]], "broken.jsonl: line 2: not valid JSON"),
    ("missing data file", [*SFT[:4], "{tmp}/none.jsonl", *SFT[5:]], "none.jsonl: file does not exist"),
    ("one-row SFT data", [*SFT[:4], "{one_row}", *SFT[5:]], "needs at least 2"),
    ("SFT data of another format", [*SFT[:4], "{text_only}", *SFT[5:]], "SFT needs columns"),
    ("pairs without chosen", [*REWARD, "--train_data", "{pairs_no_chosen}"], "expected comparisons"),
    ("string ranks", [*REWARD, "--train_data", "{string_ranks}"], "row 3: key 'ranks'"),
    ("non-string completions", [*REWARD, "--train_data", "{mixed_completions}"], "key 'completions'"),
    ("snippets without ratings", [*REWARD, "--snippets_file", "{bad_snippets}"], "key 'mean_rating'"),
    ("prompts of another format", [*PPO[:8], "{text_only}", *PPO[9:]], "format 'prompts' needs columns"),
    ("only empty documents", [*PRETRAIN[:2], "{empty_text}", *PRETRAIN[3:]], "no non-empty documents"),
    ("missing text column", [*PRETRAIN, "--text_column", "body"], "text column 'body'"),
    ("missing prompts", [*EVALUATE[:4], "{tmp}/none.jsonl", *EVALUATE[5:]], "prompts: "),
    # models
    (
        "missing relative model",
        [*SFT[:2], "runs/nothing/here/model", *SFT[3:]],
        "model folder runs/nothing/here",
    ),
    ("truncated weights", [*SFT[:2], "{truncated_model}", *SFT[3:]], "model.safetensors: truncated"),
    ("not a model folder", [*SFT[:2], "{not_a_model}", *SFT[3:]], "is not a model folder"),
    ("SFT longer than positions", [*SFT, "--max_length", "256"], "max_length: 256 tokens do not fit"),
    ("reward longer than positions", [*REWARD, "--max_length", "256"], "max_length: 256 tokens do not fit"),
    (
        "evaluate longer than positions",
        [*EVALUATE[:-1], "{text_only}", "--max_length", "256"],
        "max_length: 256",
    ),
    ("PPO response past positions", [*PPO, "--max_new_tokens", "100"], "max_prompt_length + max_new_tokens"),
    (
        "PPO reward model without stats",
        [*PPO[:4], "{rm_without_stats}", "--reward_fn", "null", *PPO[7:]],
        "reward_stats.json",
    ),
    # fine-tuning: rows, classes, targets, and tasks or methods the backbone (a tiny decoder) cannot do
    (
        "finetune missing label",
        [*FINETUNE[:6], "{ft_no_label}", *FINETUNE[7:]],
        "ft_no_label.jsonl: row 2: key 'label'",
    ),
    (
        "finetune unknown class",
        [*FINETUNE[:6], "{ft_neutral}", *FINETUNE[7:], "--labels", "negative,positive"],
        "unknown class 'neutral'",
    ),
    (
        "finetune word as a regression target",
        [*FINETUNE[:6], "{ft_word_target}", *FINETUNE[7:], "--task", "regression"],
        "row 2: key 'label': expected a number",
    ),
    (
        "finetune text-to-text on a decoder",
        [*FINETUNE, "--task", "text_to_text"],
        "task: expected not text_to_text",
    ),
    ("finetune prefix tuning on a decoder", [*FINETUNE, "--peft", "prefix_tuning"], "peft: 'prefix_tuning'"),
    ("finetune layer rate decay over 1", [*FINETUNE, "--layer_lr_decay", "1.5"], "layer_lr_decay"),
    # reasoning evaluation and the answer-checking rewards
    (
        "reason task row without an answer",
        [*REASON, "--tasks", "{{t: {{file: {reason_no_answer}}}}}"],
        "reason_no_answer.jsonl: row 2: key 'answer'",
    ),
    (
        "reason unknown generator",
        [*REASON, "--tasks", "{{t: {{generator: basic_arithmetc}}}}"],
        "tasks.t.generator: unknown reasoning-gym generator 'basic_arithmetc'",
    ),
    (
        "reason no self-consistency samples",
        [*REASON, "--num_samples", "0"],
        "num_samples: expected an int >= 1",
    ),
    (
        "PPO unknown generator as reward",
        [*PPO, "--reward_fn", "reasoning_gym:nope"],
        "reward_fn 'reasoning_gym:nope'",
    ),
    # checkpoints
    ("resume from a missing folder", [*SFT, "--resume", "{tmp}/nowhere"], "resume:"),
    (
        "resume from a damaged checkpoint",
        [*SFT, "--resume", "{damaged_checkpoint}"],
        "cannot be resumed from",
    ),
]


def fill(argv: list[str], files: dict, tmp: Path) -> list[str]:
    return [word.format(tmp=tmp, **files) for word in argv]


@pytest.mark.parametrize(("name", "argv", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_exit_code_2(name, argv, fragment, files, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    argv = fill(argv, files, tmp_path)
    if argv[0] not in ("prepare", "label"):
        argv += ["--output_dir" if argv[0] != "pipeline" else "--output_root", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    captured = capfd.readouterr()
    assert exit_info.value.code == 2, (name, captured.err[-2000:])
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"alignment {argv[0]}: error: "), (name, lines[-20:])
    assert fragment in lines[0], (name, lines[0])
    if out.exists() and argv[0] != "pipeline":
        assert {p.name for p in out.iterdir()} <= {"config.yaml"}, (
            name,
            sorted(p.name for p in out.iterdir()),
        )


def test_the_console_script_and_accelerate_script_say_the_same(files, tmp_path):
    # The real executables: the console script, and a stage script as `accelerate launch` would run it.
    alignment = Path(sys.executable).parent / "alignment"
    for command in (
        [str(alignment), *fill([*SFT, "--learning_rate", "-1"], files, tmp_path)],
        [sys.executable, "scripts/sft.py", *fill([*SFT[1:], "--learning_rate", "-1"], files, tmp_path)],
    ):
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith("alignment sft: error: command line: learning_rate")
        )
        assert "Traceback" not in result.stderr


def test_debug_flag_shows_the_traceback(files, tmp_path, capfd):
    with pytest.raises(Exception, match="learning_rate"):
        cli_main([*fill(SFT, files, tmp_path), "--learning_rate", "-1", "--debug"])
