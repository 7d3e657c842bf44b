"""Evaluation during and after training: validation loss and perplexity, and BLEU/chrF of beam-search
translations (section 6.1: beam 4, length penalty 0.6), split over processes.

`batch_loss` is the one forward that both training and validation use: the model's own label-smoothed loss
(section 5.4, defined in `VanillaTransformerForConditionalGeneration.forward`), summed over target tokens. `bleu`
scores a training run's model as the run's options say (beam, length penalty).
"""

from __future__ import annotations

import math

import torch

from ..inference.translation import translate_and_score
from .run import Corpus, Run


def load_batch(dataset, indices: list[int], collator, device) -> dict[str, torch.Tensor]:
    """The examples at `indices`, collated (padded) and moved to `device`."""
    return {k: v.to(device) for k, v in collator([dataset[i] for i in indices]).items()}


def batch_loss(model, batch: dict, label_smoothing: float, normalizer: float) -> torch.Tensor:
    """One batch's label-smoothed cross-entropy (section 5.4), summed over its target tokens and divided by
    `normalizer`. `output_logits=False`: the loss comes from `projected_cross_entropy`, without the (N, V) logits."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                 label_smoothing=label_smoothing, num_items_in_batch=normalizer, output_logits=False,
                 use_cache=False).loss


@torch.no_grad()
def validation_loss(model, dataset, max_tokens: int, accelerator, collator) -> dict:
    """Mean per-token NLL (no label smoothing) and perplexity on `dataset`, computed on all processes and summed."""
    from ..data.batching import TokenBatchSampler

    model.eval()
    sampler = TokenBatchSampler.from_dataset(dataset, max_tokens, shuffle=False,
                                             num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for indices in sampler:
        batch = load_batch(dataset, indices, collator, accelerator.device)
        with accelerator.autocast():
            nll = batch_loss(model, batch, 0.0, normalizer=1.0)  # summed NLL
        tokens = (batch["labels"] != -100).sum()
        totals += torch.stack([nll.double(), tokens.double()])
    totals = accelerator.reduce(totals, "sum")
    model.train()
    nll = (totals[0] / totals[1]).item()
    return {"valid_nll": nll, "valid_ppl": math.exp(min(nll, 50))}


def bleu(run: Run, corpus: Corpus, split: str, limit: int | None = None) -> dict:
    """BLEU and chrF of the run's beam-search translations (--num-beams, --length-penalty) of a raw split of its
    corpus (its first `limit` pairs), on every process."""
    args, pairs = run.args, corpus.raw[split]["translation"]
    return translate_and_score(run.model, corpus.tokenizer, pairs[:limit] if limit else pairs, args.source_lang,
                               args.target_lang, accelerator=run.accelerator, num_beams=args.num_beams,
                               length_penalty=args.length_penalty)
