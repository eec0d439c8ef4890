"""Evaluation of aligned checkpoints: judges, pure metrics, the report, and the `alignment evaluate` stage."""
