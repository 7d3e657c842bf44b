"""Inference: loading a model folder, translating and scoring sentences."""
