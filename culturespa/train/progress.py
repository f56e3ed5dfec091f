"""Lightning's training bar with a total and an epoch count that hold for step-capped runs with accumulation.

Lightning's own bar reads ``Epoch 0/-2`` when ``max_steps`` caps training (``max_epochs=-1``), and its total compares
optimiser steps with micro-batches, so with gradient accumulation it ends at ``6/3``. Here the total is the
micro-batches this epoch will really run and epochs count from 1 to the number the run will really start, so the
bar's ETA is right from the first batch.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


def planned_epochs(trainer: Any) -> int | None:
    """Epochs the run will start: ``max_epochs``, or fewer when ``max_steps`` ends it first (None when unknown)."""
    epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
    batches = trainer.num_training_batches
    if trainer.max_steps is not None and trainer.max_steps > 0 and math.isfinite(batches) and batches > 0:
        steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)  # a last partial accumulation steps
        by_steps = math.ceil(trainer.max_steps / steps_per_epoch)
        epochs = by_steps if epochs is None else min(epochs, by_steps)
    return epochs


def epoch_label(trainer: Any) -> str:
    total = planned_epochs(trainer)
    return f"Epoch {trainer.current_epoch + 1}" + (f"/{total}" if total else "")


class StepAwareProgressBar(TQDMProgressBar):
    """TQDM bar (like the generate and evaluate stages) whose total and epoch label are those of this run."""

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        batches = trainer.num_training_batches
        if trainer.max_steps is not None and trainer.max_steps > 0:
            remaining = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
            return min(batches, max(remaining, 0))
        return batches

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(epoch_label(trainer))
