"""The LightningModule: LoRA/QLoRA SFT of a causal LM on answer tokens, AdamW + cosine warmup.

The base model is loaded in ``configure_model`` so every rank (and every ``ddp_spawn`` worker) loads its own copy on
its own device and the module pickles small; under ``trainer=fsdp`` with ``strategy.rank0_loads`` only rank 0 reads
the weights and the other ranks build the model on the meta device (FSDP broadcasts rank 0's weights). Checkpoints
carry only the trainable (adapter) weights plus optimiser, scheduler and RNG state; loading is non-strict because the
frozen base is never in them.

No host sync per micro-batch: losses, token counts and the finiteness of loss and gradient norm stay tensors on the
device and are read (one all-reduce under DDP) only at logging steps (``trainer.log_every_n_steps``) and before a
checkpoint is written, so a non-finite value stops training before it reaches a checkpoint.

``last_batch_tokens``: a 0-d integer tensor on the device, the number of real (non-padding) tokens of the last
training micro-batch, set in ``training_step`` without a host sync, for throughput callbacks (tokens/s, MFU) to sum.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch

from culturespa.errors import CultureSPAError
from culturespa.models.dtype import set_cuda_tf32
from culturespa.train.peft_model import build_peft_model, device_map_for
from culturespa.train.strategies import builds_on_meta, clean_name, clip_gradients

RNG_KEY = "culturespa_rng"
LOSS_KEY = "culturespa_loss_window"  # the train/loss sum and micro-batch count since the last logging step


def batch_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Real tokens of a micro-batch as a device tensor (no sync): the attention mask's ones, or every position of a
    padding-free (packed) batch."""
    mask = batch.get("attention_mask")
    if mask is not None:
        return mask.sum()
    return torch.tensor(batch["input_ids"].numel(), device=batch["input_ids"].device)


def batch_examples(batch: dict[str, torch.Tensor]) -> int:
    """Examples in a micro-batch, from shapes only: rows, or the sequences a packed row holds (``position_ids``
    restarting at 0; the collator counts them into ``examples``)."""
    if "examples" in batch:
        return int(batch["examples"])
    return int(batch["input_ids"].shape[0])


class SFTModule(L.LightningModule):
    def __init__(
        self,
        model_cfg: dict[str, Any],
        peft_cfg: dict[str, Any],
        optim_cfg: dict[str, Any],
        cache_dir: str | None,
        total_steps: int,
        checkpoint_dir: str = "",
        seed: int = 0,
        tf32: bool = True,
    ) -> None:
        super().__init__()
        self.model_cfg, self.peft_cfg, self.optim_cfg = model_cfg, peft_cfg, optim_cfg
        self.cache_dir = cache_dir
        self.total_steps = max(1, int(total_steps))
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.tf32 = bool(tf32)
        self.model: Any = None
        self.strict_loading = False
        self.samples_seen = 0
        self.last_batch_tokens: torch.Tensor | None = None
        self._window: dict[str, torch.Tensor] = {}
        self._window_start: float | None = None

    # ---- model --------------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        on_gpu = self._trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        rank = self.trainer.local_rank if self._trainer is not None else 0
        if on_gpu:
            set_cuda_tf32(self.tf32)
        empty = self._trainer is not None and builds_on_meta(self.trainer.strategy, self.trainer.global_rank)
        self.model = build_peft_model(
            self.model_cfg, self.peft_cfg, self.cache_dir, device_map_for(rank, on_gpu), seed=self.seed, empty=empty
        )

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.model(**batch)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "examples"}
        # no KV cache: a loss needs none, and with one transformers would not read packed position_ids as boundaries
        return self.model(**inputs, use_cache=False).loss

    # ---- steps --------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self._window_start is None:
            self._window_start = self._now()
        loss = self.compute_loss(batch)
        self.last_batch_tokens = batch_tokens(batch)
        self.samples_seen += batch_examples(batch)
        self._add("loss", loss.detach().float())
        self._add("micro_batches", torch.ones((), device=loss.device))
        self._add("tokens", self.last_batch_tokens.float())
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        size = batch_examples(batch)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        return loss

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        grads = [p.grad.detach().float().norm(2) for p in self.parameters() if p.grad is not None]
        norm = torch.stack(grads).norm(2) if grads else torch.zeros((), device=self.device)
        self._window["grad_norm"] = norm
        self._add("bad_norm", (~torch.isfinite(norm)).float())
        if not self.is_log_step():
            return
        self.check_finite()
        window = self._window
        metrics: dict[str, Any] = {"train/grad_norm": norm, "train/lr": optimizer.param_groups[0]["lr"]}
        if "loss" in window:
            loss = window["loss"] / window["micro_batches"]
            elapsed = self._now() - (self._window_start or self._now())
            if elapsed > 0:  # real tokens per second since the last logging step, all ranks (assumed equally fast)
                metrics["train/tokens_per_s"] = window["tokens"] * self.trainer.world_size / elapsed
        self.log_dict(metrics, on_step=True)
        if "loss" in window:  # logged at logging steps only: the bar reads it then, not per micro-batch
            self.log("train/loss", loss, on_step=True, prog_bar=True)
        self._window, self._window_start = {}, None

    def is_log_step(self) -> bool:
        """Whether the optimiser step under way is one Lightning logs (``trainer.log_every_n_steps``)."""
        every = max(1, int(getattr(self.trainer, "log_every_n_steps", 1) or 1))
        return (int(self.global_step) + 1) % every == 0

    def check_finite(self) -> None:
        """Stop on a non-finite loss or gradient norm since the last check: the one host sync (all ranks agree)."""
        zero = torch.zeros((), device=self.device)
        loss, norm = self._window.get("loss", zero), self._window.get("grad_norm", zero)
        flags = torch.stack([(~torch.isfinite(loss)).float(), self._window.get("bad_norm", zero).float()])
        if self._trainer is not None and self.trainer.world_size > 1:
            flags = self.trainer.strategy.reduce(flags, reduce_op="sum")
        bad_loss, bad_norm = (bool(x) for x in flags.tolist())
        if not (bad_loss or bad_norm):
            return
        what = f"loss is {float(loss)}" if bad_loss else f"gradient norm is {float(norm)}"
        raise CultureSPAError(
            f"training stopped: {what} at optimiser step {self.global_step}; "
            f"the last good checkpoint is kept in {self.checkpoint_dir or 'the checkpoint folder'}"
        )

    def _add(self, key: str, value: torch.Tensor) -> None:
        self._window[key] = self._window[key] + value if key in self._window else value

    @staticmethod
    def _now() -> float:
        return time.perf_counter()

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        if not clip_gradients(self, gradient_clip_val, gradient_clip_algorithm):  # FSDP clips through its root
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ---- optimiser ----------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

        params = [p for p in self.parameters() if p.requires_grad]
        opt = self.optim_cfg
        optimizer = torch.optim.AdamW(
            params,
            lr=float(opt["lr"]),
            weight_decay=float(opt.get("weight_decay", 0.0)),
            betas=tuple(opt.get("betas", (0.9, 0.999))),
            eps=float(opt.get("eps", 1e-8)),
        )
        warmup = math.ceil(float(opt.get("warmup_ratio", 0.0)) * self.total_steps)
        schedule = str(opt.get("scheduler", "cosine"))
        if schedule == "cosine":
            scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, self.total_steps)
        elif schedule == "linear":
            scheduler = get_linear_schedule_with_warmup(optimizer, warmup, self.total_steps)
        else:
            raise CultureSPAError(f"sft.scheduler={schedule!r}; choose one of: cosine, linear")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the adapter only: the frozen base is reloaded from its own files. Never a non-finite adapter."""
        if self._window:
            self.check_finite()
        keep = {clean_name(name) for name, p in self.named_parameters() if p.requires_grad}  # FSDP: wrapper prefixes
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint[RNG_KEY] = {"torch": torch.get_rng_state(), "samples_seen": self.samples_seen}
        # the loss summed since the last logging step: a step cut by a resume logs the mean of all its micro-batches
        checkpoint[LOSS_KEY] = {
            k: self._window[k].detach().cpu() for k in ("loss", "micro_batches") if k in self._window
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(RNG_KEY)
        if state:
            torch.set_rng_state(state["torch"])
            self.samples_seen = int(state.get("samples_seen", 0))
        self._window.update(checkpoint.get(LOSS_KEY) or {})  # on the CPU: on_train_start moves it to the device

    def on_train_start(self) -> None:
        self._window = {key: value.to(self.device) for key, value in self._window.items()}
