"""Stage 3: PPO against a reward model (or a judge) with a KL penalty to the reference policy."""
