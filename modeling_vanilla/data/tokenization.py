"""Joint source-target BPE tokenizer of "Attention Is All You Need" (section 5.1).

The paper encodes WMT 2014 EN-DE with byte-pair encoding into a vocabulary of about 37,000 tokens shared by
source and target. `train_bpe_tokenizer` trains such a vocabulary with the `tokenizers` library on sentences of
both languages and wraps it in a `transformers.PreTrainedTokenizerFast`, so that `save_pretrained`,
`AutoTokenizer.from_pretrained` and `tokenizer(src, text_target=tgt)` work as for any Hub tokenizer.

Design:

* Byte-level BPE (the text is split into UTF-8 bytes before merging): every string can be encoded, `<unk>` is
  never produced, and decoding gives the input back exactly, whitespace included. The only normalization is
  Unicode NFC (canonical composition: a decomposed "u + combining diaeresis" becomes "ü"), which keeps casing,
  accents, umlauts and "ß" as they are; so `decode(encode(s)) == s` for every NFC string, which is how nearly
  all text, and all of WMT and Multi30k, is stored.
* Special tokens and ids match `VanillaTransformerConfig`: `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3.
* `</s>` is appended to every sequence, source and target alike; no `<s>` is prepended (the decoder starts from
  `<s>`, its `decoder_start_token_id`, when the model shifts the labels right).
* Special tokens written literally in the text ("</s>" in a crawled web page) are encoded as ordinary text
  (`split_special_tokens=True`), so data cannot inject an end of sentence.

This module imports neither torch nor the model code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["BOS_ID", "EOS_ID", "KINDS", "PAD_ID", "SPECIAL_TOKENS", "UNK_ID", "round_trip_failures",
           "train_bpe_tokenizer"]

# byte-level: the design above. metaspace: words split at spaces, each marked with "▁" (SentencePiece's
# convention), text NFKC-normalized, BPE over characters; characters unseen in training become <unk>, and NFKC
# changes some strings (ligatures, full-width forms), so decoding is exact only for NFKC text without them.
KINDS = ("byte-level", "metaspace")

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<s>", "</s>", "<unk>"
# The position in this tuple is the token id; it must agree with the model config's pad/bos/eos ids.
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))

# 256 byte symbols plus the special tokens: the smallest vocabulary that can still encode every string.
_MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
_TRAINING_BATCH = 1000


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 37000,
    *,
    kind: str = "byte-level",
    min_frequency: int = 2,
    model_max_length: int = 1024,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE vocabulary shared by both languages (section 5.1) and return it as a HF tokenizer.

    Args:
        texts: sentences of both languages, e.g. `data.iter_sentences(dataset["train"], ["en", "de"])`. Read
            once, as a stream; a generator is fine.
        vocab_size: size of the vocabulary including the 4 special tokens; 37000 for the paper's EN-DE. At
            least 260 (the 256 byte symbols and the special tokens). Fewer tokens result when the corpus has
            fewer pairs occurring `min_frequency` times than merges asked for.
        kind: "byte-level" (default, exact round trip, no <unk>) or "metaspace" (see `KINDS`).
        min_frequency: a pair of symbols must occur this often to be merged.
        model_max_length: longest sequence the model accepts, stored in the tokenizer (the config's
            `max_position_embeddings`, 1024 by default).
        show_progress: show the `tokenizers` trainer's progress bar.

    Returns:
        A `PreTrainedTokenizerFast` with `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3 that appends `</s>` to every
        sequence. Set the model config's `vocab_size` to `len(tokenizer)`.

    Raises:
        ValueError: vocab_size too small, or no non-empty text to train on.
        TypeError: an item of `texts` is not a string (its position is named).
    """
    if vocab_size < _MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs at least {_MIN_VOCAB_SIZE} tokens "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens). The paper uses 37000 for EN-DE."
        )
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(KINDS)}.")
    if model_max_length < 2:
        raise ValueError(f"model_max_length={model_max_length} must be at least 2 (one token and </s>).")

    counter = {"texts": 0, "non_empty": 0}
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    alphabet = {}
    if kind == "byte-level":
        backend.normalizer = normalizers.NFC()
        # add_prefix_space=False keeps a sentence's first word without a leading space, so decoding adds none.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        alphabet = {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()}
    else:
        backend.normalizer = normalizers.NFKC()
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # added first, in order: ids 0, 1, 2, 3
        show_progress=show_progress,
        **alphabet,
    )
    backend.train_from_iterator(_batched_checked(texts, counter), trainer=trainer)
    if counter["non_empty"] == 0:
        raise ValueError(
            f"no text to train the tokenizer on: got {counter['texts']} sentences, none of them non-empty."
        )
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}",
        pair=f"$A {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(EOS_TOKEN, EOS_ID)],
    )
    return _wrap(backend, model_max_length)


def _batched_checked(texts: Iterable[str], counter: dict[str, int]) -> Iterator[list[str]]:
    """Yield `texts` in lists of `_TRAINING_BATCH` (faster for the Rust trainer), checking each is a string."""
    batch: list[str] = []
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{position}] is a {type(text).__name__}, not a str: pass sentences, e.g. "
                "data.iter_sentences(dataset['train'], [source_lang, target_lang])."
            )
        counter["texts"] += 1
        if text.strip():
            counter["non_empty"] += 1
        batch.append(text)
        if len(batch) == _TRAINING_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _wrap(backend: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a trained `tokenizers.Tokenizer` as a `PreTrainedTokenizerFast` and check its special token ids."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        # The cleanup removes spaces before punctuation: it would break the exact round trip.
        clean_up_tokenization_spaces=False,
        split_special_tokens=True,
    )
    ids = [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special token ids {dict(zip(SPECIAL_TOKENS, ids))} differ from the model config's.")
    return tokenizer


def round_trip_failures(tokenizer, sentences: Iterable[str]) -> list[tuple[int, str, str]]:
    """Sentences that do not come back unchanged from `decode(encode(s), skip_special_tokens=True)`.

    Returns `(position, sentence, decoded)` for each failure; an empty list means an exact round trip.
    """
    sentences = list(sentences)
    encoded = tokenizer(sentences)["input_ids"]
    decoded = tokenizer.batch_decode(encoded, skip_special_tokens=True)
    return [(i, s, d) for i, (s, d) in enumerate(zip(sentences, decoded)) if s != d]
