"""The train split's token batches as the training loop takes them: collated ahead of the step by a DataLoader and
copied to the device without waiting."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from .run import Corpus


class EpochBatches:
    """The DataLoader's batch sampler: this process's batches of the sampler's current epoch, from `start` on."""

    def __init__(self, sampler):
        self.sampler, self.start = sampler, 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.start, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.start


class TrainLoader:
    """A DataLoader that collates the training batches in `num_workers` processes while the step runs (default: 2 on
    a GPU, none on a CPU), into pinned memory on a GPU. Its workers live for the whole run; each epoch draws its
    batches anew."""

    def __init__(self, corpus: Corpus, num_workers: int | None, device):
        from torch.utils.data import DataLoader

        workers = num_workers if num_workers is not None else (2 if device.type == "cuda" else 0)
        self.sampler, self.device = corpus.sampler, device
        self.epoch_batches = EpochBatches(corpus.sampler)
        self.loader = DataLoader(corpus.splits["train"], batch_sampler=self.epoch_batches, collate_fn=corpus.collator,
                                 num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers else None)

    def epoch(self, epoch: int, start: int) -> Iterator[dict]:
        """This process's batches of `epoch` from batch `start` on (a resumed run collates nothing it skips), each
        on its way to the device."""
        self.sampler.set_epoch(epoch)
        self.epoch_batches.start = start
        batches = iter(self.loader)
        return ({k: v.to(self.device, non_blocking=True) for k, v in batch.items()} for batch in batches)
