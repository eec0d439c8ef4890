"""`alignment reason`: reasoning and in-context evaluation (zero/few-shot, CoT, zero-shot CoT, self-consistency)."""
