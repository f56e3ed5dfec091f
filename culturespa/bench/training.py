"""SFT benchmark on the embedded model: our LightningModule against a plain PyTorch + PEFT loop on the same batches
(tokens/s and their ratio; the target is at most 10% overhead), and peak memory (RSS) of LoRA against QLoRA.

Each memory figure comes from a fresh subprocess, because a process's peak RSS never goes down; the package's modules
are imported inside the functions so that the probe's process pays only for what it measures.
Run with ``python -m culturespa.bench.training`` (or ``make bench``); keep the machine otherwise idle for fair numbers.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2_135m"
MICRO_BATCH = 2
WARMUP_STEPS = 1
MEASURED_STEPS = 6
ROUNDS = 2  # plain, Lightning, plain, Lightning: alternating cancels the order (allocator warm-up) effect
MEMORY_STEPS = 1


def _setup(model: str = MODEL) -> tuple[Any, list[dict[str, Any]], Any]:
    """Config, a fixed list of collated micro-batches from hand-made pairs, and the config."""
    from culturespa.config import compose  # lazy: see the module docstring
    from culturespa.models.loader import ModelSpec, load_tokenizer  # lazy: see the module docstring
    from culturespa.train.datamodule import Collator  # lazy: see the module docstring
    from culturespa.train.run import TrainSettings  # lazy: see the module docstring
    from culturespa.train.sft_data import ExampleEncoder, read_pairs  # lazy: see the module docstring
    from culturespa.train.synthetic import write_pairs  # lazy: see the module docstring

    tmp = Path(tempfile.mkdtemp(prefix="culturespa-bench-"))
    cfg = compose("train", [f"model={model}", "model.dtype=float32", "logger=none"], output_dir=tmp / "run")
    pairs = read_pairs(write_pairs(tmp / "pairs", {"USA": 64}) / "USA.jsonl", "USA")
    tokenizer = load_tokenizer(ModelSpec.from_config(cfg.model), cfg.paths.cache_dir)
    encoder = ExampleEncoder(tokenizer, TrainSettings.from_config(cfg).style, "aware", int(cfg.data.cutoff_len))
    examples = encoder.encode_all(pairs)
    collate = Collator(tokenizer.pad_token_id)
    steps = WARMUP_STEPS + MEASURED_STEPS
    batches = [collate(examples[i * MICRO_BATCH : (i + 1) * MICRO_BATCH]) for i in range(steps)]
    return cfg, batches, tokenizer


def _plain(cfg: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    peft_cfg = OmegaConf.to_container(cfg.peft, resolve=True)
    optim = {k: cfg.sft[k] for k in ("lr", "weight_decay", "warmup_ratio", "scheduler")}
    return model_cfg, peft_cfg, optim  # type: ignore[return-value]


def _tokens(batch: dict[str, Any]) -> int:
    return int(batch["attention_mask"].sum())


def bench_plain(cfg: Any, batches: list[dict[str, Any]]) -> float:
    """Tokens/s of a hand-written loop doing what the Trainer does: forward, backward, clip, AdamW, cosine step."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from culturespa.train.peft_model import build_peft_model  # lazy: see the module docstring

    model_cfg, peft_cfg, optim = _plain(cfg)
    model = build_peft_model(model_cfg, peft_cfg, str(cfg.paths.cache_dir), "cpu", seed=int(cfg.seed))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(optim["lr"]))
    sched = get_cosine_schedule_with_warmup(opt, 1, len(batches))
    start = 0.0
    for index, batch in enumerate(batches):
        if index == WARMUP_STEPS:
            start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    return sum(_tokens(b) for b in batches[WARMUP_STEPS:]) / (time.perf_counter() - start)


class _Timer:
    """Lightning callback: wall time from the first measured batch to the end of training."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        import lightning as L

        class Timer(L.Callback):
            start = 0.0
            end = 0.0

            def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
                if batch_idx == WARMUP_STEPS:
                    self.start = time.perf_counter()

            def on_train_batch_end(self, *args: Any) -> None:
                self.end = time.perf_counter()

        return Timer()


def bench_lightning(cfg: Any, batches: list[dict[str, Any]]) -> float:
    """Tokens/s of our SFTModule under a Lightning Trainer, same batches, same settings (clip 1.0, accumulate 1)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from culturespa.train.module import SFTModule  # lazy: see the module docstring

    model_cfg, peft_cfg, optim = _plain(cfg)
    module = SFTModule(model_cfg, peft_cfg, optim, str(cfg.paths.cache_dir), len(batches), seed=int(cfg.seed))
    timer = _Timer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=[timer],
    )
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return sum(_tokens(b) for b in batches[WARMUP_STEPS:]) / (timer.end - timer.start)


def memory_probe(quantization: str) -> dict[str, Any]:
    """Run in a fresh process: load, train ``MEMORY_STEPS`` steps, report peak RSS."""
    import torch

    from culturespa.train.peft_model import build_peft_model  # lazy: see the module docstring

    cfg, batches, _ = _setup()
    model_cfg, peft_cfg, _ = _plain(cfg)
    if quantization != "none":
        from omegaconf import OmegaConf

        from culturespa.config import compose  # lazy: see the module docstring

        qcfg = compose("train", [f"model={MODEL}", "peft=qlora", "logger=none"], output_dir=cfg.paths.cache_dir)
        peft_cfg = OmegaConf.to_container(qcfg.peft, resolve=True)
    model = build_peft_model(model_cfg, peft_cfg, str(cfg.paths.cache_dir), "cpu")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    _malloc_trim()  # hand the freed fp32 load buffers back to the OS, so "after load" shows what the model keeps
    loaded_mb, anon_mb = _status_mb("VmRSS"), _status_mb("RssAnon")
    _reset_peak()  # the load peak (fp32 weights read before quantising) is the same for both; measure training too
    start = time.perf_counter()
    for batch in batches[:MEMORY_STEPS]:
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - start) / MEMORY_STEPS
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # RssAnon is private memory; the rest of the RSS is the mapped safetensors file (page cache, reclaimable)
    return {
        "rss_after_load_mb": round(loaded_mb),
        "anon_after_load_mb": round(anon_mb),
        "peak_rss_training_mb": round(_status_mb("VmHWM")),
        "peak_rss_process_mb": round(peak_mb),
        "s_per_step": round(seconds, 2),
    }


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB; -1 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return -1.0


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> None:
    """Reset VmHWM (Linux: writing 5 to clear_refs), so the next reading is the peak of what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _memory(quantization: str) -> dict[str, Any]:
    code = f"import json; from culturespa.bench.training import memory_probe; print(json.dumps(memory_probe({quantization!r})))"
    env = os.environ | {"WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> dict[str, Any]:
    from culturespa.models.dtype import cpu_capability  # lazy: see the module docstring

    cap = f"[CPU {cpu_capability()}]"  # printed beside every figure
    cfg, batches, _ = _setup()
    print(
        f"SFT bench on {MODEL}: {MEASURED_STEPS} measured steps x micro-batch {MICRO_BATCH} (+{WARMUP_STEPS} warm-up), "
        f"{sum(_tokens(b) for b in batches[WARMUP_STEPS:])} tokens, LoRA r={cfg.peft.r} fp32, {cap}"
    )
    plain_runs, lightning_runs = [], []
    for _ in range(ROUNDS):
        plain_runs.append(bench_plain(cfg, batches))
        lightning_runs.append(bench_lightning(cfg, batches))
    plain, lightning = max(plain_runs), max(lightning_runs)  # best of the rounds: least disturbed by the machine
    overhead = plain / lightning - 1
    print(
        f"  plain PyTorch+PEFT loop : {plain:8.1f} tokens/s  (rounds: {', '.join(f'{x:.1f}' for x in plain_runs)})  {cap}"
    )
    print(
        f"  Lightning SFTModule     : {lightning:8.1f} tokens/s  (rounds: {', '.join(f'{x:.1f}' for x in lightning_runs)})  {cap}"
    )
    print(f"  Lightning / plain       : {lightning / plain:8.3f}  (overhead {overhead:+.1%}; target <= +10%)  {cap}")
    memory = {"lora": _memory("none"), "qlora": _memory("4bit")}
    for name, figures in memory.items():
        print(f"  peak RSS {name:<5} ({MEMORY_STEPS} train steps, fresh process): {figures}  {cap}")
    return {
        "plain_tokens_per_s": plain,
        "lightning_tokens_per_s": lightning,
        "ratio": lightning / plain,
        "overhead": overhead,
        "memory": memory,
        "cpu": cpu_capability(),
    }


if __name__ == "__main__":
    main()
