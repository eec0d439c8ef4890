"""Held-out scores during PPO: the reward model's (proxy) score, a gold judge's, and the KL to the reference.

Plotted against sqrt(KL) these draw the over-optimization picture of Gao et al. 2022 ("Scaling laws for reward
model over-optimization"): the proxy keeps rising with KL while the gold score peaks and falls. Samples come
from a fixed seed inside a forked RNG, so evaluating never moves the training randomness, and from the same
prompts every time.

`select_by: gold` keeps the policy with the best gold score seen at an evaluation and saves that one as the
run's model; `select_patience` stops the run after that many evaluations without a better gold score. The best
policy so far travels inside every checkpoint, so a resumed run chooses exactly as an unbroken one would.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from alignment.core.judges import load_judge, score
from alignment.core.launch import forward_module, gathered_parameters, unwrapped_for_generation
from alignment.ppo import losses
from alignment.ppo.data import PromptSource
from alignment.ppo.rollout import Rollouts, generate_rollouts, reference_logprobs

if TYPE_CHECKING:
    from alignment.ppo.session import Session

BEST_FILE = "best_policy.safetensors"
BEST_STATE = "best_policy.json"


class HeldOut:
    """The held-out prompts, the gold judge, and the best policy seen so far (with `select_by: gold`)."""

    def __init__(self, session: Session, checkpoint: Path | None = None):
        config = session.config
        self.prompts: list[dict] = []
        if config.eval_data:
            rows = PromptSource(config.eval_data, session.tokenizer, False, config.seed).rows
            world = session.accelerator.num_processes
            self.prompts = rows[: min(config.max_eval_samples, len(rows)) // world * world]
        self.judge = load_judge(config.eval_judge, "eval_judge") if config.eval_judge else None
        self.selecting = config.select_by == "gold"
        self.best_gold: float | None = None
        self.best_step: int | None = None
        self.evals_without_gain = 0
        self.latest_step: int | None = None  # the step of the latest evaluation in this process's run
        self.latest: dict[str, float] = {}
        self.best_weights: dict[str, torch.Tensor] | None = None  # full policy weights, on the CPU
        if checkpoint is not None and (checkpoint / BEST_STATE).exists():
            self._load(checkpoint)

    def __bool__(self) -> bool:
        return bool(self.prompts)

    def due(self, session: Session, step: int) -> bool:
        """Whether step `step` (1-based, just finished) gets an evaluation besides the start and the end."""
        every = session.config.eval_steps
        return bool(self.prompts) and every > 0 and step % every == 0 and step < session.config.max_steps

    def patience_spent(self, session: Session) -> bool:
        """Whether `select_patience` evaluations in a row brought no better gold score."""
        patience = session.config.select_patience
        return self.selecting and patience > 0 and self.evals_without_gain >= patience

    def evaluate(self, session: Session, step: int, when: str) -> dict[str, float]:
        """Score the held-out prompts now; log the scores at `step`; keep the policy if it is the gold best."""
        accelerator = session.accelerator
        per_rank = len(self.prompts) // accelerator.num_processes
        mine = self.prompts[accelerator.process_index * per_rank : (accelerator.process_index + 1) * per_rank]
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(session.config.seed + 7 + accelerator.process_index)
            rollouts = generate_rollouts(session, mine, with_logprobs=True)
        device = accelerator.device
        token_ids = (rollouts.query_ids, rollouts.query_mask, rollouts.response_ids, rollouts.response_mask)
        raw = session.scorer(rollouts.prompts, rollouts.response_texts, rollouts.rows, token_ids=token_ids)
        shaped = session.shaping(raw.to(device), rollouts.ended_with_eos.to(device))
        stats = {
            "eval/score_raw": raw.to(device),
            "eval/score": shaped,
            "eval/kl": self._kl(session, rollouts),
        }
        if self.judge is not None:
            gold = [
                score(self.judge, p, r, row)
                for p, r, row in zip(rollouts.prompts, rollouts.response_texts, rollouts.rows)
            ]
            stats["eval/gold"] = torch.tensor(gold, device=device)
        scores = {key: accelerator.gather(value.to(device)).mean().item() for key, value in stats.items()}
        scores["eval/sqrt_kl"] = math.sqrt(max(scores["eval/kl"], 0.0))
        session.logger.log(step, scores)
        gold_text = f", gold {scores['eval/gold']:.4f}" if self.judge else ""
        session.log(
            f"held-out at step {step} ({when}): score {scores['eval/score']:.4f}{gold_text}, KL {scores['eval/kl']:.3f}"
        )
        if self.selecting:
            self._consider(session, step, scores["eval/gold"])
        self.latest_step, self.latest = step, scores
        return scores

    def _kl(self, session: Session, rollouts: Rollouts) -> torch.Tensor:
        """Per-sample KL(policy || reference): the sum over response tokens of the log-ratio of the sample."""
        temperature, chunk = session.config.temperature, session.config.forward_batch_size or len(rollouts)
        policy_logprobs = rollouts.logprobs
        if session.reference is None:  # LoRA: the reference is the policy with its adapter disabled
            with unwrapped_for_generation(session.model, session.accelerator) as unwrapped:
                if policy_logprobs is None:
                    policy_logprobs = reference_logprobs(unwrapped.policy, rollouts, temperature, chunk)
                with unwrapped.policy.disable_adapter():
                    ref = reference_logprobs(unwrapped.policy, rollouts, temperature, chunk)
        else:
            if policy_logprobs is None:
                with unwrapped_for_generation(session.model, session.accelerator) as unwrapped:
                    policy_logprobs = reference_logprobs(unwrapped.policy, rollouts, temperature, chunk)
            ref = reference_logprobs(forward_module(session.reference), rollouts, temperature, chunk)
        mask = rollouts.response_mask.float()
        return (losses.kl_k1(policy_logprobs.float(), ref.float()) * mask).sum(dim=1)

    # -- the best policy -----------------------------------------------------------------------------------

    def _consider(self, session: Session, step: int, gold: float) -> None:
        if self.best_gold is not None and gold <= self.best_gold:
            self.evals_without_gain += 1
            return
        self.best_gold, self.best_step, self.evals_without_gain = gold, step, 0
        with unwrapped_for_generation(session.model, session.accelerator) as unwrapped:
            with gathered_parameters(unwrapped.policy, session.accelerator):
                self.best_weights = {
                    k: v.detach().clone().cpu() for k, v in unwrapped.policy.state_dict().items()
                }

    def restore_best(self, session: Session) -> int | None:
        """Put the gold-best policy back into the model (before saving it); its step, or None without one."""
        if self.best_weights is None:
            return None
        unwrapped = session.accelerator.unwrap_model(session.model)
        with gathered_parameters(unwrapped.policy, session.accelerator, modify=True):
            unwrapped.policy.load_state_dict(self.best_weights)
        return self.best_step

    def write(self, folder: Path) -> None:
        """Add the best policy so far to a checkpoint being written (main process)."""
        if self.best_weights is None:
            return
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.best_weights.items()}, str(folder / BEST_FILE))
        state = {
            "gold": self.best_gold,
            "step": self.best_step,
            "evals_without_gain": self.evals_without_gain,
        }
        (folder / BEST_STATE).write_text(json.dumps(state))

    def _load(self, checkpoint: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((checkpoint / BEST_STATE).read_text())
        self.best_gold, self.best_step = state["gold"], state["step"]
        self.evals_without_gain = state["evals_without_gain"]
        self.best_weights = load_file(str(checkpoint / BEST_FILE))
