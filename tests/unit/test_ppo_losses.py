"""The PPO math against numbers worked out by hand (each expected value is derived in a comment)."""

import math

import pytest
import torch

from alignment.ppo import losses


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_masked_mean_and_var_ignore_padding():
    values = t([[1.0, 2.0, 3.0, 100.0]])
    mask = t([[1, 1, 1, 0]])
    assert losses.masked_mean(values, mask).item() == pytest.approx(2.0)
    # deviations -1, 0, 1 -> sum of squares 2; unbiased / (3 - 1) = 1, biased / 3 = 0.667
    assert losses.masked_var(values, mask).item() == pytest.approx(1.0)
    assert losses.masked_var(values, mask, unbiased=False).item() == pytest.approx(2 / 3)


def test_masked_whiten_full_and_scale_only():
    values = t([[1.0, 2.0, 3.0, 100.0]])
    mask = t([[1, 1, 1, 0]])
    # mean 2, var 1 -> (v - 2) / 1; the padded 100 becomes 0
    assert losses.masked_whiten(values, mask).tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    # shift_mean=False keeps the mean: (v - 2) / 1 + 2
    assert losses.masked_whiten(values, mask, shift_mean=False).tolist()[0] == pytest.approx(
        [1.0, 2.0, 3.0, 0.0], abs=1e-6
    )
    # scale: values [0, 4] have mean 2, unbiased var 8 -> (0 - 2) / sqrt(8) = -0.7071
    scaled = losses.whiten(t([0.0, 4.0]), torch.tensor(2.0), torch.tensor(8.0))
    assert scaled.tolist() == pytest.approx([-0.70711, 0.70711], abs=1e-5)


def test_masked_whiten_with_all_reduce_equals_whitening_the_whole_batch():
    # Two "processes" hold halves of one batch: with the sums added across them, each half is whitened with
    # the statistics of the whole (mean 2.5, unbiased var 5/3 over the masked 1, 2, 3, 4), not its own.
    halves = [t([[1.0, 2.0, 9.0]]), t([[3.0, 4.0, 9.0]])]
    masks = [t([[1, 1, 0]]), t([[1, 1, 0]])]
    sums = [torch.stack([(v * m).sum(), (v**2 * m).sum(), m.sum()]).double() for v, m in zip(halves, masks)]
    total = sums[0] + sums[1]
    whitened = [losses.masked_whiten(v, m, all_reduce=lambda _: total) for v, m in zip(halves, masks)]
    std = math.sqrt(5 / 3)
    assert whitened[0].tolist()[0] == pytest.approx([-1.5 / std, -0.5 / std, 0.0], abs=1e-5)
    assert whitened[1].tolist()[0] == pytest.approx([0.5 / std, 1.5 / std, 0.0], abs=1e-5)
    alone = losses.masked_whiten(t([[1.0, 2.0, 3.0, 4.0]]), t([[1, 1, 1, 1]]))
    assert torch.cat([w[:, :2] for w in whitened], dim=1).tolist()[0] == pytest.approx(
        alone.tolist()[0], abs=1e-6
    )


def _whiten_on_two_processes(rank: int, port: int, values: torch.Tensor, mask: torch.Tensor, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def all_reduce(tensor):
        dist.all_reduce(tensor)
        return tensor

    half = values.shape[0] // 2
    rows = slice(rank * half, (rank + 1) * half)
    out[rank] = losses.masked_whiten(values[rows], mask[rows], True, all_reduce)
    dist.destroy_process_group()


def test_masked_whiten_over_two_real_processes_matches_one():
    import socket

    import torch.multiprocessing as mp

    torch.manual_seed(0)
    values = torch.randn(6, 5) * 3 + 1
    mask = (torch.rand(6, 5) > 0.3).float()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_whiten_on_two_processes, args=(port, values, mask, out), nprocs=2)
    torch.testing.assert_close(
        torch.cat([out[0], out[1]]), losses.masked_whiten(values, mask), atol=1e-5, rtol=0
    )


def test_kl_estimators_by_hand():
    logprobs = torch.tensor([math.log(0.5)])
    ref_logprobs = torch.tensor([math.log(0.25)])
    # k1 = log(0.5 / 0.25) = log 2
    assert losses.kl_k1(logprobs, ref_logprobs).item() == pytest.approx(math.log(2))
    # k3 with r = 0.25 / 0.5 = 0.5: (0.5 - 1) - log 0.5 = -0.5 + 0.6931 = 0.1931
    assert losses.kl_k3(logprobs, ref_logprobs).item() == pytest.approx(0.193147, abs=1e-5)
    # both are 0 when the policies agree; k3 is never negative while k1 can be
    same = torch.tensor([-1.3])
    assert losses.kl_k1(same, same).item() == 0.0
    assert losses.kl_k3(same, same).item() == 0.0
    assert losses.kl_k1(ref_logprobs, logprobs).item() < 0 < losses.kl_k3(ref_logprobs, logprobs).item()
    assert losses.kl_per_token(logprobs, ref_logprobs, "k3").item() == pytest.approx(0.193147, abs=1e-5)
    with pytest.raises(ValueError, match="k2"):
        losses.kl_per_token(logprobs, ref_logprobs, "k2")


def test_kl_estimators_unbiased_on_samples():
    # KL(p || q) for p = [0.7, 0.3], q = [0.4, 0.6] is 0.7 log(7/4) + 0.3 log(3/6) = 0.18380
    torch.manual_seed(0)
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    samples = torch.multinomial(p, 200_000, replacement=True)
    logp, logq = p.log()[samples], q.log()[samples]
    assert losses.kl_k1(logp, logq).mean().item() == pytest.approx(0.18380, abs=5e-3)
    assert losses.kl_k3(logp, logq).mean().item() == pytest.approx(0.18380, abs=5e-3)


def test_entropy_from_logits():
    # uniform over 4 -> log 4; one-hot-like -> ~0
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]]])
    entropy = losses.entropy_from_logits(logits)
    assert entropy[0, 0].item() == pytest.approx(math.log(4))
    assert entropy[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_penalized_rewards_put_score_on_last_real_token():
    scores = t([2.0, 1.0])
    kl = t([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    rewards = losses.penalized_rewards(scores, kl, mask, kl_coef=0.5)
    # row 0: -0.5*0.1, -0.5*0.2 + 2, padding 0 ; row 1: -0.2, -0.25, -0.3 + 1
    assert rewards[0].tolist() == pytest.approx([-0.05, 1.9, 0.0])
    assert rewards[1].tolist() == pytest.approx([-0.2, -0.25, 0.7])


def test_gae_gamma_lambda_one():
    rewards, values, mask = t([[0.0, 0.0, 1.0]]), t([[0.5, 0.4, 0.3]]), t([[1, 1, 1]])
    advantages, returns = losses.gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # t=2: 1 - 0.3 = 0.7; t=1: (0 + 0.3 - 0.4) + 0.7 = 0.6; t=0: (0 + 0.4 - 0.5) + 0.6 = 0.5
    assert advantages[0].tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert returns[0].tolist() == pytest.approx([1.0, 1.0, 1.0])  # A + V = the Monte-Carlo return


def test_gae_discounted():
    rewards, values, mask = t([[0.0, 0.0, 1.0]]), t([[0.5, 0.4, 0.3]]), t([[1, 1, 1]])
    advantages, returns = losses.gae_advantages(rewards, values, mask, gamma=0.9, lam=0.5)
    # t=2: 0.7 ; t=1: delta = 0.9*0.3 - 0.4 = -0.13, A = -0.13 + 0.45*0.7 = 0.185
    # t=0: delta = 0.9*0.4 - 0.5 = -0.14, A = -0.14 + 0.45*0.185 = -0.05675
    assert advantages[0].tolist() == pytest.approx([-0.05675, 0.185, 0.7], abs=1e-6)
    assert returns[0].tolist() == pytest.approx([0.44325, 0.585, 1.0], abs=1e-6)


def test_gae_masks_tokens_after_eos():
    # the third position is padding after EOS: its reward 5 and value 9 must not leak backwards
    rewards, values, mask = t([[0.0, 1.0, 5.0]]), t([[0.5, 0.4, 9.0]]), t([[1, 1, 0]])
    advantages, returns = losses.gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # t=1 is terminal: 1 - 0.4 = 0.6 ; t=0: (0.4 - 0.5) + 0.6 = 0.5
    assert advantages[0].tolist() == pytest.approx([0.5, 0.6, 0.0])
    assert returns[0].tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_clipped_policy_loss_by_hand():
    old = t([[0.0, 0.0]])
    new = torch.log(t([[1.5, 1.5]]))  # ratio 1.5 on both tokens
    advantages = t([[1.0, -1.0]])
    loss, stats = losses.clipped_policy_loss(new, old, advantages, t([[1, 1]]), cliprange=0.2)
    # A=+1: max(-1.5, -1.2) = -1.2 (clipped) ; A=-1: max(1.5, 1.2) = 1.5 (unclipped) -> mean 0.15
    assert loss.item() == pytest.approx(0.15)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    # approx KL (k3 of old vs new): (1.5 - 1) - log 1.5 = 0.094535
    assert stats["approx_kl"].item() == pytest.approx(0.094535, abs=1e-5)
    # masking the first token leaves only the unclipped one
    loss, stats = losses.clipped_policy_loss(new, old, advantages, t([[0, 1]]), cliprange=0.2)
    assert loss.item() == pytest.approx(1.5)
    assert stats["clipfrac"].item() == 0.0


def test_policy_loss_at_ratio_one_is_minus_mean_advantage_and_has_right_gradient():
    logprobs = torch.zeros(1, 2, requires_grad=True)
    loss, _ = losses.clipped_policy_loss(logprobs, torch.zeros(1, 2), t([[2.0, -1.0]]), t([[1, 1]]), 0.2)
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    # d/dlogp of -A*exp(logp - old) at ratio 1 is -A / n_tokens
    assert logprobs.grad[0].tolist() == pytest.approx([-1.0, 0.5])


def test_clipped_value_loss_by_hand():
    values, old_values, returns = t([[1.0, 0.1]]), t([[0.0, 0.0]]), t([[2.0, 0.0]])
    loss, stats = losses.clipped_value_loss(values, old_values, returns, t([[1, 1]]), cliprange_value=0.5)
    # token 0: clipped V = 0.5: max((1-2)^2, (0.5-2)^2) = 2.25 ; token 1: inside the range: 0.01
    # 0.5 * mean(2.25, 0.01) = 0.565
    assert loss.item() == pytest.approx(0.565)
    assert stats["vf_clipfrac"].item() == pytest.approx(0.5)


def test_explained_variance():
    returns, mask = t([[1.0, 2.0, 3.0, 50.0]]), t([[1, 1, 1, 0]])
    assert losses.explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    # predicting the mean explains nothing
    assert losses.explained_variance(t([[2.0, 2.0, 2.0, 0.0]]), returns, mask).item() == pytest.approx(0.0)


def test_causal_lm_loss_ignores_padding():
    logits = torch.zeros(1, 3, 4)  # uniform -> each real target costs log 4
    ids = torch.tensor([[0, 1, 2]])
    assert losses.causal_lm_loss(logits, ids, torch.tensor([[1, 1, 0]])).item() == pytest.approx(math.log(4))


def test_leave_one_out_advantages_use_the_other_responses_to_the_same_prompt():
    # Two prompts x three responses; per-token rewards sum to totals 1, 2, 6 and 0, 0, 3 (padding ignored).
    rewards = t(
        [[0.5, 0.5, 9.0], [2.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 0.0]]
    )
    mask = t([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    advantages = losses.leave_one_out_advantages(rewards, mask, group_size=3)
    # group 1: 1 - (2 + 6) / 2 = -3, 2 - (1 + 6) / 2 = -1.5, 6 - (1 + 2) / 2 = 4.5
    # group 2: 0 - (0 + 3) / 2 = -1.5 twice, 3 - 0 = 3; every real token carries its response's advantage
    expected = [
        [-3.0, -3.0, 0.0],
        [-1.5, 0.0, 0.0],
        [4.5, 4.5, 4.5],
        [-1.5, 0.0, 0.0],
        [-1.5, -1.5, 0.0],
        [3.0, 3.0, 3.0],
    ]
    assert advantages.tolist() == expected
    with pytest.raises(ValueError, match="groups of 4"):
        losses.leave_one_out_advantages(rewards, mask, group_size=4)


def test_k2_loss_gradient_is_the_kl_gradient_in_expectation():
    # One position, vocabulary of 3: weighting the k2 loss of each token by its probability under pi (the
    # expectation over sampled tokens, with pi held fixed as the sampling distribution) gives the gradient of
    # the exact KL(pi || pi_ref); the k1 estimate used as a loss would give zero.
    logits = torch.tensor([0.3, -1.0, 0.8], requires_grad=True)
    ref_logprobs = torch.log_softmax(torch.tensor([1.0, 0.0, -0.5]), dim=0)
    logprobs = torch.log_softmax(logits, dim=0)
    exact = (logprobs.exp() * (logprobs - ref_logprobs)).sum()
    (expected_exact,) = torch.autograd.grad(exact, logits, retain_graph=True)
    probs = logprobs.exp().detach()
    expected_k2 = torch.zeros(3)
    for token in range(3):
        loss = losses.kl_k2_loss(logprobs[token].view(1, 1), ref_logprobs[token].view(1, 1), t([[1]]))
        (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
        expected_k2 += probs[token] * grad
    assert expected_k2.tolist() == pytest.approx(expected_exact.tolist(), abs=1e-6)
