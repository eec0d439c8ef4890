"""The PPO math, as pure functions of tensors (this module imports only torch and the pure `core.tokens`).

Layout: every per-token tensor is `[batch, response_len]`, aligned with the response tokens, and comes with
`mask` of the same shape (1 for real response tokens through the first EOS, 0 for padding after it).
Masked positions never contribute to a mean, a variance, an advantage or a loss.

References:
- PPO: Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (eq. 7 clipped objective).
- GAE: Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation" (eq. 16).
- KL estimators: J. Schulman, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html
- KL-penalized reward: Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences" (eq. 2);
  Ouyang et al. 2022 (InstructGPT), eq. 2 (PPO-ptx).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from alignment.core.tokens import token_logprobs

# ---------------------------------------------------------------------------------------------
# Masked statistics


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over positions where `mask` is 1: sum(v * m) / sum(m) (0 when the mask is empty)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over masked positions; `unbiased` divides by n - 1 (Bessel's correction), as torch.var does."""
    mean = masked_mean(values, mask)
    count = mask.sum()
    sum_sq = ((values - mean) ** 2 * mask).sum()
    denominator = (count - 1) if unbiased else count
    return sum_sq / denominator.clamp(min=1)


def whiten(
    values: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps); with `shift_mean=False` the mean is added back (only the scale changes).

    Rewards are whitened without shifting the mean (a constant shift of every reward would change the
    incentive to end early or late); advantages are whitened fully.
    """
    whitened = (values - mean) * torch.rsqrt(var + eps)
    return whitened if shift_mean else whitened + mean


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Whiten with the mean and unbiased variance of the masked positions; masked-out positions become 0.

    With `all_reduce` (a function summing a tensor over processes) the statistics are those of every
    process's masked positions together, so whitening a batch split over W processes gives what one
    process would give on the whole batch. The sums are taken in float64: n * var = sum(v^2) - n * mean^2
    loses digits in float32.
    """
    mask = mask.to(values.dtype)
    sums = torch.stack([(values * mask).sum(), (values**2 * mask).sum(), mask.sum()]).double()
    if all_reduce is not None:
        sums = all_reduce(sums)
    total, total_sq, count = sums
    mean = total / count.clamp(min=1)
    var = ((total_sq - count * mean**2) / (count - 1).clamp(min=1)).clamp(min=0)
    whitened = whiten(values, mean.to(values.dtype), var.to(values.dtype), shift_mean)
    return whitened * mask


# ---------------------------------------------------------------------------------------------
# Log-probabilities, entropy, KL


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax distribution at each position: [batch, len, vocab] -> [batch, len].

    H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v (the second form never takes log of a zero).
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimator of KL(pi || pi_ref) for tokens sampled from pi: log pi(x) - log pi_ref(x).

    Unbiased but high-variance, and negative for some tokens (Schulman, "Approximating KL Divergence").
    """
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): (r - 1) - log r with r = pi_ref(x) / pi(x).

    Unbiased for samples from pi, always >= 0 and lower-variance than k1 (Schulman, "Approximating KL
    Divergence", http://joschu.net/blog/kl-approx.html).
    """
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


def kl_k2_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token k2 estimate 0.5 * (log pi(y_t) - log pi_ref(y_t))^2 over masked tokens, as a loss.

    On tokens sampled from pi its gradient, (log pi - log pi_ref) * grad log pi, is in expectation the
    gradient of each position's KL(pi || pi_ref) given its prefix (Schulman's note; the k1 estimate as a
    loss would have zero expected gradient).
    """
    return masked_mean(0.5 * (logprobs - ref_logprobs) ** 2, mask)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Dispatch to `kl_k1` or `kl_k3` by name."""
    if estimator == "k1":
        return kl_k1(logprobs, ref_logprobs)
    if estimator == "k3":
        return kl_k3(logprobs, ref_logprobs)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1' or 'k3'")


# ---------------------------------------------------------------------------------------------
# Rewards and advantages


def penalized_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: r_t = -beta * KL_t, plus the sequence score on the last real token.

    scores [batch], kl and mask [batch, response_len] -> rewards [batch, response_len] (0 where mask is 0).
    This is Ziegler et al. 2019 eq. 2, R(x, y) = r(x, y) - beta * log(pi(y|x) / pi_ref(y|x)), spread over tokens.
    """
    rewards = -kl_coef * kl * mask
    last_index = (mask.sum(dim=1).long() - 1).clamp(min=0)  # masks are contiguous from position 0
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index] += scores.to(rewards.dtype)
    return rewards


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens; returns (advantages, returns), both [batch, len].

    delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1}   (GAE eq. 16),
    returns_t = A_t + V_t (the value target). The episode ends at the last real token: values and rewards
    at masked positions are treated as 0, so V_{T+1} = 0 and nothing after EOS leaks backwards.
    """
    rewards = rewards * mask
    values = values * mask
    length = rewards.shape[1]
    advantages_reversed = []
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(length)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages_reversed.append(next_advantage)
        next_value = values[:, t]
    advantages = torch.stack(advantages_reversed[::-1], dim=1) * mask
    returns = (advantages + values) * mask
    return advantages, returns


def leave_one_out_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO advantages: each response's total reward minus the mean of its siblings', on every token.

    rewards and mask [batch, len], rows laid out as consecutive groups of `group_size` responses to one
    prompt. With R_i the sum of response i's per-token rewards (score minus the KL penalty),
    A_i = R_i - mean_{j != i} R_j (Kool et al. 2019; Ahmadian et al. 2024): a baseline per prompt that
    needs no critic and does not include the response it judges, so the estimate stays unbiased.
    """
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"batch of {rewards.shape[0]} is not made of groups of {group_size} >= 2")
    totals = (rewards * mask).sum(dim=1).view(-1, group_size)
    baselines = (totals.sum(dim=1, keepdim=True) - totals) / (group_size - 1)
    return (totals - baselines).view(-1, 1) * mask


# ---------------------------------------------------------------------------------------------
# Losses


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (PPO eq. 7), as a loss to minimize; all inputs [batch, len].

    ratio = exp(logprobs - old_logprobs);
    loss = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps)).
    Also returns `clipfrac` (share of tokens where the clipped term won) and `approx_kl`, the k3 estimate of
    KL(old || new) (Schulman's note; CleanRL logs the same).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(pg_loss1, pg_loss2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_loss2 > pg_loss1).float(), mask),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: 0.5 * mean_t max((V_t - R_t)^2, (V_clip_t - R_t)^2); inputs [batch, len].

    V_clip = old_V + clip(V - old_V, -eps_v, eps_v) keeps the critic near the values the advantages came
    from (the PPO2 baseline implementation's choice). Returns `vf_clipfrac` too.
    """
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((loss_clipped > loss_unclipped).float(), mask)}
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[returns - values] / Var[returns] over masked tokens: 1 is a perfect critic, <= 0 a useless one."""
    var_returns = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)


def causal_lm_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean next-token cross-entropy over real tokens (the PPO-ptx pretraining term); [batch, len(, vocab)]."""
    logprobs = token_logprobs(logits[:, :-1], input_ids[:, 1:])
    target_mask = attention_mask[:, 1:] * attention_mask[:, :-1]
    return -masked_mean(logprobs, target_mask)
