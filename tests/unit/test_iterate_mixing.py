"""earlier_policy_share: which policies a round's K samples per prompt come from (sampling itself is faked)."""

import pytest

from alignment.core.errors import ConfigError
from alignment.iterate import collect
from alignment.iterate.config import Config


@pytest.fixture
def tagged_sampling(monkeypatch):
    """Each fake response names the policy that 'sampled' it; the calls are recorded."""
    calls = []

    def fake(config, policy, prompts, k, seed):
        calls.append((policy, list(prompts), k))
        return [[f"{policy}|{prompt}|{j}" for j in range(k)] for prompt in prompts]

    monkeypatch.setattr(collect, "sample_texts", fake)
    return calls


def sources(row):
    return [text.split("|")[0] for text in row["completions"]]


def test_half_of_each_prompts_samples_come_from_one_earlier_policy(tagged_sampling):
    config = Config(completions_per_prompt=4, earlier_policy_share=0.5)
    prompts = [f"p{i}" for i in range(20)]
    rows = collect.sample_completions(config, "now", prompts, 3, earlier=["round0", "round1"])
    assert [r["prompt"] for r in rows] == prompts and all(r["round"] == 3 for r in rows)
    used = set()
    for row in rows:
        kinds = sources(row)
        assert kinds[:2] == ["now", "now"] and len(set(kinds[2:])) == 1 and kinds[2] in ("round0", "round1")
        used.add(kinds[2])
    assert used == {"round0", "round1"}  # 20 prompts: both earlier policies drawn
    # one sampling call per policy, each earlier one for only the prompts that drew it
    assert tagged_sampling[0] == ("now", prompts, 2)
    assert sum(len(c[1]) for c in tagged_sampling[1:]) == 20 and all(c[2] == 2 for c in tagged_sampling)


def test_no_earlier_policy_in_round_one_or_at_share_zero(tagged_sampling):
    config = Config(completions_per_prompt=4, earlier_policy_share=0.5)
    rows = collect.sample_completions(config, "now", ["a", "b"], 1, earlier=[])
    assert all(sources(r) == ["now"] * 4 for r in rows)
    rows = collect.sample_completions(Config(completions_per_prompt=4), "now", ["a"], 2, earlier=["round0"])
    assert sources(rows[0]) == ["now"] * 4 and len(tagged_sampling) == 2


def test_share_must_leave_the_current_policy_samples():
    with pytest.raises(ConfigError, match="earlier_policy_share"):
        Config(earlier_policy_share=1.0).validate()
