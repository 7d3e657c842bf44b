"""Training: the loop, checkpoints, averaging, fine-tuning, evaluation curves, the allocator (section 5)."""
