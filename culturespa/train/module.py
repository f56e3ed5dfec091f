"""The LightningModule: LoRA/QLoRA SFT of a causal LM on answer tokens, AdamW + cosine warmup.

The base model is loaded in ``configure_model`` so every rank (and every ``ddp_spawn`` worker) loads its own copy on
its own device and the module pickles small. Checkpoints carry only the trainable (adapter) weights plus optimiser,
scheduler and RNG state; loading is non-strict because the frozen base is never in them.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch

from culturespa.errors import CultureSPAError
from culturespa.train.peft_model import build_peft_model, device_map_for
from culturespa.train.strategies import clean_name, clip_gradients

RNG_KEY = "culturespa_rng"


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
    ) -> None:
        super().__init__()
        self.model_cfg, self.peft_cfg, self.optim_cfg = model_cfg, peft_cfg, optim_cfg
        self.cache_dir = cache_dir
        self.total_steps = max(1, int(total_steps))
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.model: Any = None
        self.strict_loading = False
        self.samples_seen = 0
        self._window_tokens = 0
        self._window_start: float | None = None

    # ---- model --------------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        on_gpu = self._trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        rank = self.trainer.local_rank if self._trainer is not None else 0
        self.model = build_peft_model(
            self.model_cfg, self.peft_cfg, self.cache_dir, device_map_for(rank, on_gpu), seed=self.seed
        )

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.model(**batch)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**batch).loss

    # ---- steps --------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self._window_start is None:
            self._window_start = time.perf_counter()
        loss = self.compute_loss(batch)
        finite = bool(torch.isfinite(loss.detach()).item())
        if self.trainer.world_size > 1:
            finite = bool(self.trainer.strategy.reduce_boolean_decision(finite, all=True))
        if not finite:
            raise CultureSPAError(
                f"training stopped: loss is {loss.item()} at optimiser step {self.global_step} (batch {batch_idx}); "
                f"the last good checkpoint is kept in {self.checkpoint_dir or 'the checkpoint folder'}"
            )
        self.samples_seen += int(batch["input_ids"].shape[0])
        self._window_tokens += int(batch["attention_mask"].sum().item())
        size = batch["input_ids"].shape[0]
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        grads = [p.grad.detach().float().norm(2) for p in self.parameters() if p.grad is not None]
        norm = torch.stack(grads).norm(2) if grads else torch.zeros(())
        if not torch.isfinite(norm):
            raise CultureSPAError(
                f"training stopped: gradient norm is {norm.item()} at optimiser step {self.global_step}; "
                f"the last good checkpoint is kept in {self.checkpoint_dir or 'the checkpoint folder'}"
            )
        now = time.perf_counter()
        elapsed = now - (self._window_start or now)
        metrics = {"train/grad_norm": norm, "train/lr": optimizer.param_groups[0]["lr"]}
        if elapsed > 0:
            # Tokens (without padding) per second over this optimiser step, all ranks (assumed equally fast).
            metrics["train/tokens_per_s"] = self._window_tokens * self.trainer.world_size / elapsed
        self.log_dict(metrics, on_step=True)
        self._window_tokens, self._window_start = 0, None

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
        """Keep the adapter only: the frozen base is reloaded from its own files."""
        keep = {clean_name(name) for name, p in self.named_parameters() if p.requires_grad}  # FSDP: wrapper prefixes
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint[RNG_KEY] = {"torch": torch.get_rng_state(), "samples_seen": self.samples_seen}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(RNG_KEY)
        if state:
            torch.set_rng_state(state["torch"])
            self.samples_seen = int(state.get("samples_seen", 0))
