"""Translate sentences with a model's `generate()` and score them with sacreBLEU: the one helper that training's
BLEU, fine-tuning, the translate command and the attention tools share. Decoding is the model's generation config
(section 6.1: beam 4, length penalty 0.6, at most input length + 50 tokens) unless arguments override it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext

import torch


@torch.no_grad()
def generate_ids(model, tokenizer, sentences: Sequence[str], **generate_kwargs) -> list[list[int]]:
    """Token ids of the translations of `sentences` (one batch, padded on the right), without <s>, </s> or padding."""
    inputs = tokenizer(list(sentences), return_tensors="pt", padding=True, truncation=True)
    inputs = {k: v.to(model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    output = model.generate(**inputs, **generate_kwargs)  # (B, T), starting with <s>
    special = {model.config.pad_token_id, model.config.decoder_start_token_id}
    translations = []
    for row in output.tolist():
        row = row[1:]
        if model.config.eos_token_id in row:
            row = row[: row.index(model.config.eos_token_id)]
        translations.append([token for token in row if token not in special])
    return translations


def length_sorted_batches(sentences: Sequence[str], indices: Iterable[int], batch_size: int) -> Iterator[list[int]]:
    """The non-blank sentences among `indices`, sorted by length and cut into batches of `batch_size` (similar
    lengths together: less padding). Every translation backend batches this way."""
    mine = sorted((i for i in indices if sentences[i].strip()), key=lambda i: len(sentences[i]))
    for start in range(0, len(mine), batch_size):
        yield mine[start : start + batch_size]


@torch.no_grad()
def translate(model, tokenizer, sentences: Sequence[str], batch_size: int = 64, accelerator=None,
              **generate_kwargs) -> list[str]:
    """Translations of `sentences`, in their order; a blank sentence gives "".

    Sentences of similar length are batched together (less padding). With an Accelerate `accelerator`, each process
    translates every n-th sentence and the results are gathered, in order, on every process; its autocast applies.
    """
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
        rank, world = accelerator.process_index, accelerator.num_processes
    else:
        rank, world = 0, 1
    was_training = model.training
    model.eval()
    # Blank sentences translate to "" without a generate() call.
    results = [(i, "") for i in range(rank, len(sentences), world) if not sentences[i].strip()]
    for chunk in length_sorted_batches(sentences, range(rank, len(sentences), world), batch_size):
        autocast = accelerator.autocast() if accelerator is not None else nullcontext()
        with autocast:
            ids = generate_ids(model, tokenizer, [sentences[i] for i in chunk], **generate_kwargs)
        results.extend(zip(chunk, tokenizer.batch_decode(ids, skip_special_tokens=True)))
    model.train(was_training)
    if world > 1:
        from accelerate.utils import gather_object

        results = gather_object(results)
    return [text for _, text in sorted(results)]


def one_line(text: str) -> str:
    """A translation as one line of an output file: line breaks it may hold become spaces, so that line i of the
    output answers line i of the input."""
    return text.replace("\r", " ").replace("\n", " ")


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Cased, detokenized sacreBLEU (13a) and chrF of `hypotheses` against one reference each, with signatures."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references: they must pair up.")
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": round(bleu_score.score, 2), "chrf": round(chrf_score.score, 2),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def translate_and_score(model, tokenizer, pairs: Sequence[dict], source_lang: str, target_lang: str,
                        accelerator=None, **generate_kwargs) -> dict:
    """BLEU and chrF of the model's translations of `pairs` ({lang: text} dicts), with 3 example outputs."""
    sources = [pair[source_lang] for pair in pairs]
    references = [pair[target_lang] for pair in pairs]
    hypotheses = translate(model, tokenizer, sources, accelerator=accelerator, **generate_kwargs)
    return {**score(hypotheses, references), "sentences": len(sources), "examples": hypotheses[:3]}
