"""Dataset, dynamic-padding and packing collates, a resumable sharded sampler and the LightningDataModule.

The sampler shards a seeded per-epoch permutation across ranks by interleaving (rank r takes items r, r+W, ...), so
one optimiser step sees the same examples whatever the world size, and it skips the micro-batches a resumed run has
already trained on, so kill + resume continues exactly. Everything is a module-level class: ``ddp_spawn`` pickles it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from culturespa.train.sft_data import IGNORE_INDEX


class TokenizedDataset(Dataset):
    """Pre-tokenized examples: dicts with ``input_ids`` and ``labels`` (lists of ints)."""

    def __init__(self, examples: Sequence[dict[str, list[int]]]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.examples[index]


class Collator:
    """Right-pads a micro-batch to its own longest example. Padding gets attention 0 and label -100 by position."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = int(pad_id)

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(item["input_ids"]) for item in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(batch):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(item["labels"], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class PackingCollator:
    """Padding-free packing (``sft.packing``): the micro-batch's examples end to end in one row, ``position_ids``
    restarting at 0 for each, no attention mask. transformers reads the restarts as sequence boundaries (block-diagonal
    causal mask with sdpa/eager, variable-length kernels with flash_attention_2), so no token attends across examples;
    each example's first label is a masked prompt token, so no loss term spans two examples either. The loss is the
    same per-token mean over the same answer tokens as the padded batch, with no compute spent on padding."""

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        ids = [torch.tensor(item["input_ids"], dtype=torch.long) for item in batch]
        labels = [torch.tensor(item["labels"], dtype=torch.long) for item in batch]
        if any(len(row) and int(row[0]) != IGNORE_INDEX for row in labels):  # would be trained on across a boundary
            raise ValueError("packing needs every example to start with a masked (prompt) token")
        positions = [torch.arange(len(row), dtype=torch.long) for row in ids]
        return {
            "input_ids": torch.cat(ids).unsqueeze(0),
            "labels": torch.cat(labels).unsqueeze(0),
            "position_ids": torch.cat(positions).unsqueeze(0),
            "examples": len(batch),
        }


class ShardedSampler(Sampler[int]):
    """Seeded per-epoch order, interleaved over ranks (padded by wrapping, like DistributedSampler), with a skip of
    the first ``skip`` items of epoch ``skip_epoch`` for resumed runs."""

    def __init__(self, size: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0
        self.skip_epoch = -1
        self.per_rank = math.ceil(size / world_size) if size else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        padded = order + order[: self.per_rank * self.world_size - self.size]
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        mine = self.order()
        if self.epoch == self.skip_epoch:
            mine = mine[self.skip :]
        return iter(mine)

    def __len__(self) -> int:
        return self.per_rank


def steps_per_epoch(size: int, micro_batch_size: int, world_size: int, accumulate: int) -> int:
    """Optimiser steps in one epoch (Lightning steps on a last partial accumulation too)."""
    batches = math.ceil(math.ceil(size / world_size) / micro_batch_size)
    return max(1, math.ceil(batches / accumulate))


def micro_batches_started(trainer: L.Trainer) -> int:
    """Micro-batches of the current epoch Lightning has fetched (restored on resume): the counter whose remainder
    modulo the accumulation decides when the optimiser steps, so data skipping and checkpoints read the same one."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)


class SFTDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: Sequence[dict[str, list[int]]],
        val: Sequence[dict[str, list[int]]],
        micro_batch_size: int,
        accumulate: int,
        pad_id: int,
        seed: int,
        num_workers: int = 0,
        packing: bool = False,
    ) -> None:
        super().__init__()
        self.train_set = TokenizedDataset(train)
        self.val_set = TokenizedDataset(val)
        self.micro_batch_size = micro_batch_size
        self.accumulate = accumulate
        self.collate = Collator(pad_id)  # validation keeps padded batches: val/loss is an example-weighted mean
        self.train_collate: Collator | PackingCollator = PackingCollator() if packing else self.collate
        self.seed = seed
        self.num_workers = num_workers

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: TokenizedDataset, sampler: ShardedSampler, collate: Any = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.micro_batch_size,
            sampler=sampler,
            collate_fn=collate or self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        sampler = ShardedSampler(len(self.train_set), self.seed, True, rank, world)
        skip = self._resumed_micro_batches(world)
        if skip:
            sampler.skip_epoch = self.trainer.current_epoch
            sampler.skip = skip * self.micro_batch_size
        return self._loader(self.train_set, sampler, self.train_collate)

    def _resumed_micro_batches(self, world: int) -> int:
        """Micro-batches of the current epoch a resumed run already trained on: those of its completed steps, plus
        those of a step a wall-time checkpoint cut mid-accumulation. The latter are read from Lightning's restored
        batch counter, the one whose remainder decides when the optimiser steps, so data and accumulation agree."""
        trainer = self.trainer
        if trainer is None:
            return 0
        spe = steps_per_epoch(len(self.train_set), self.micro_batch_size, world, self.accumulate)
        done = trainer.global_step - trainer.current_epoch * spe
        if not 0 <= done < spe:
            return 0
        partial = micro_batches_started(trainer) - done * self.accumulate
        return done * self.accumulate + (partial if 0 < partial < self.accumulate else 0)

    def val_dataloader(self) -> DataLoader | list[Any]:
        if len(self.val_set) == 0:
            return []
        rank, world = self._rank_world()
        return self._loader(self.val_set, ShardedSampler(len(self.val_set), self.seed, False, rank, world))
