"""Foundations shared by every stage: config, launch, logging, formats, models, generation, assets."""
