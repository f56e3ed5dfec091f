"""Which weights answer for which culture: the base model, one joint adapter, or one adapter per culture.

``eval.adapter`` may name
* an adapter folder (holds ``adapter_config.json``): a joint adapter, used for every culture;
* a folder holding ``{CODE}/adapter_config.json``: specific adapters, each culture answered by its own;
* a training output folder holding ``adapter/`` or ``adapters/`` (the layout ``train.py`` writes).

Everything is checked before any model is loaded: the folders exist, every selected culture has its adapter, and each
adapter was trained on ``cfg.model`` (``culturespa.json`` ``base_model``, else PEFT's ``base_model_name_or_path``).

For answering, an adapter is merged into the base weights when the base is not quantised (:func:`activate`): the
same function up to float rounding, and plain linear layers run faster than LoRA-wrapped ones (no extra low-rank
matmuls per layer, and fp32 CPU weights can be prepacked). Over a bitsandbytes 4/8-bit base it stays unmerged:
merging would round the LoRA update into quantised weights.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError, fail
from culturespa.models.integrity import weights_problems
from culturespa.prompts.builder import STYLE_FILE, PromptStyle
from culturespa.stages.lineage import ADAPTER_META_FILE as META_FILE

ADAPTER_CONFIG = "adapter_config.json"

log = logging.getLogger(__name__)


@dataclass
class AdapterPlan:
    """``kind`` is base | joint | specific; ``folders`` maps a culture (None for joint) to its adapter folder."""

    kind: str
    folders: dict[str | None, Path] = field(default_factory=dict)

    def folder_for(self, culture: str | None) -> Path | None:
        if self.kind == "base":
            return None
        if self.kind == "joint":
            return self.folders[None]
        return self.folders[culture]

    def style_for(self, culture: str | None) -> PromptStyle | None:
        """The prompt style saved beside the culture's adapter, if any."""
        folder = self.folder_for(culture)
        if folder is None or not (folder / STYLE_FILE).is_file():
            return None
        return PromptStyle.load(folder)

    def describe(self) -> str | None:
        if self.kind == "base":
            return None
        if self.kind == "joint":
            return str(self.folders[None])
        return str(next(iter(self.folders.values())).parent)


def _is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise fail(path, f"malformed JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise fail(path, "expected a JSON object")
    return data


def _model_aliases(model_cfg: Any, cache_dir: str | Path | None) -> set[str]:
    """Names under which an adapter's base model may be recorded for ``model_cfg``."""
    name = str(model_cfg.get("name"))
    aliases = {name}
    if model_cfg.get("path"):
        path = str(model_cfg.get("path"))
        aliases |= {path, path.rstrip("/"), Path(path).name}
    if cache_dir:
        aliases.add(str(Path(str(cache_dir)) / "models" / name))
    return aliases


def check_base_model(folder: Path, model_cfg: Any, cache_dir: str | Path | None = None) -> None:
    """Refuse an adapter trained on another base model (it would load with shape errors, or worse, without)."""
    expected = str(model_cfg.get("name"))
    meta_path = folder / META_FILE
    if meta_path.is_file():
        base = _read_json(meta_path).get("base_model")
        if base is not None and str(base) != expected:
            raise fail(meta_path, f"adapter was trained on base model {base!r}, but model={expected!r}")
        if base is not None:
            return
    recorded = _read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path")
    if not recorded:
        return
    recorded = str(recorded)
    aliases = _model_aliases(model_cfg, cache_dir)
    if recorded in aliases or recorded.rstrip("/") in aliases or Path(recorded).name == expected:
        return
    raise fail(folder / ADAPTER_CONFIG, f"adapter was trained on base model {recorded!r}, but model={expected!r}")


def resolve_adapters(
    adapter: str | None, cultures: list[str], model_cfg: Any, cache_dir: str | Path | None = None
) -> AdapterPlan:
    """Work out the layout of ``eval.adapter`` and check it fully (one-line errors, no model loaded)."""
    if adapter in (None, "", "null", "none"):
        return AdapterPlan("base")
    root = Path(str(adapter)).expanduser()
    if not root.is_dir():
        raise CultureSPAError(f"eval.adapter: {root}: no such adapter folder")
    if not _is_adapter(root):
        if _is_adapter(root / "adapter"):
            root = root / "adapter"
        elif (root / "adapters").is_dir():
            root = root / "adapters"
    if _is_adapter(root):
        check_base_model(root, model_cfg, cache_dir)
        _check_weights(root)
        return AdapterPlan("joint", {None: root})
    found = {code: root / code for code in cultures if _is_adapter(root / code)}
    if not found:
        raise CultureSPAError(
            f"eval.adapter: {root}: neither an adapter folder ({ADAPTER_CONFIG}) nor a folder of per-culture adapters "
            f"({{CODE}}/{ADAPTER_CONFIG})"
        )
    missing = [code for code in cultures if code not in found]
    if missing:
        raise CultureSPAError(f"eval.adapter: {root}: no adapter for culture(s) {', '.join(missing)}")
    for folder in found.values():
        check_base_model(folder, model_cfg, cache_dir)
        _check_weights(folder)
    return AdapterPlan("specific", dict(found))


def _check_weights(folder: Path) -> None:
    """A truncated or foreign ``adapter_model.safetensors`` is one line now, not a traceback after the base loads."""

    for file, problem in weights_problems(folder):
        raise fail(
            file, f"{problem}; train the adapter again (same command resumes) or point eval.adapter at a good copy"
        )


def quantised(model: Any) -> bool:
    """Whether ``model``'s weights are bitsandbytes-quantised (4 or 8 bit)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def activate(model: Any, base: Any, folder: Path, name: str, shared_base: bool) -> Any:
    """The model that answers with the adapter in ``folder``. Unquantised base: the adapter merged into the base
    (into a copy of it when ``shared_base``, i.e. other adapters still need the plain base). Quantised base: a PEFT
    model over the one base, each adapter loaded once and switched to (``model`` is the current one or ``base``).
    Says which in one log line."""
    from peft import PeftModel  # heavy optional dependency, needed only for adapters

    if not quantised(base):
        target = copy.deepcopy(base) if shared_base else base
        merged = PeftModel.from_pretrained(target, str(folder), adapter_name=name).merge_and_unload()
        merged.eval()
        log.info("adapter %s (%s): merged into the base weights for answering (unquantised base: exact)", name, folder)
        return merged
    if model is base:
        model = PeftModel.from_pretrained(base, str(folder), adapter_name=name)
    elif name not in model.peft_config:
        model.load_adapter(str(folder), adapter_name=name)
    model.set_adapter(name)
    model.eval()
    log.info(
        "adapter %s (%s): unmerged over the quantised base (merging would round it into 4/8-bit weights)", name, folder
    )
    return model
