"""Data (section 5.1): from files or the Hub to padded token batches, top to bottom.

1. `corpus`: `load_translation_dataset` / `load_corpus` give a `datasets.DatasetDict` in the Hub's WMT schema,
   `{"translation": {"de": "...", "en": "..."}}`, from the Hub (`wmt/wmt14`, `de-en`), aligned plain text files or
   JSON lines files; `iter_sentences` yields both languages' sentences for the tokenizer.
2. `tokenization`: the joint BPE tokenizer (`train_bpe_tokenizer`), section 5.1's shared source-target vocabulary.
3. `preprocessing`: `preprocess_translation` tokenizes, drops empty, too long and badly length-matched pairs, and
   counts what was dropped and why.
4. `batching`: `TokenBatchSampler` cuts batches of about `max_tokens` tokens of similar-length pairs;
   `TranslationCollator` pads them.
5. `toy_corpus`: a small synthetic corpus for tests and the quickstart.

Bad input fails early with a `TranslationDataError` (a `ValueError`) naming the file and line, or the field, and the
fix. None of these modules imports torch or the model at import time.
"""
