"""Data: corpora, tokenization, preprocessing, token batching (section 5.1)."""
