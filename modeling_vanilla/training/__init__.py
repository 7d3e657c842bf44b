"""Training (section 5): options, the loop, checkpoints, averaging, optimization, evaluation."""
