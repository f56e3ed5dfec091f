"""Typed settings per config group (LitGPT-style dataclasses) and the one place their values are checked.

Each dataclass mirrors one ``conf/<group>/*.yaml``; a field's ``rule`` says which values it takes. ``check_values``
walks every rule over the composed config before any model or data is loaded, so ``decoding.mode=beam``,
``data.fraction=1.5`` or ``sft.lr=abc`` fail at once with one line naming the key, the value and what is valid.
Keys the YAML leaves out take the field's default (``decoding.top_k``, ``sft.checkpoint_minutes``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from culturespa.errors import CultureSPAError

S = TypeVar("S", bound="GroupSettings")
DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")  # one entry of an engine.devices list
DEVICES_HINT = "must be auto, a positive integer or a list of devices like [cuda:0,cuda:1] or [cpu,cpu]"


@dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]

    def problem(self, key: str, value: Any) -> str | None:
        if value in self.choices:
            return None
        return f"{key}={value!r} is not valid; choose one of: {', '.join(self.choices)}"


@dataclass(frozen=True)
class Between:
    """A number in ``(low, high]`` (``[low, high]`` when ``low_inclusive``)."""

    low: float
    high: float
    low_inclusive: bool = False

    def problem(self, key: str, value: Any) -> str | None:
        interval = f"{'[' if self.low_inclusive else '('}{self.low}, {self.high}]"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key}={value!r} is not a number; valid: {interval}"
        above = self.low <= value if self.low_inclusive else self.low < value
        return None if above and value <= self.high else f"{key}={value!r} is out of range; valid: {interval}"


@dataclass(frozen=True)
class Count:
    """An integer of at least ``low`` (1: positive, 0: non-negative)."""

    low: int = 1

    def problem(self, key: str, value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= self.low:
            return None
        return f"{key}={value!r} must be a {'positive' if self.low == 1 else 'non-negative'} integer"


@dataclass(frozen=True)
class Positive:
    """A number above zero."""

    def problem(self, key: str, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key}={value!r} is not a number; give a number > 0"
        return None if value > 0 and math.isfinite(value) else f"{key}={value!r} must be a number > 0"


@dataclass(frozen=True)
class Devices:
    """``engine.devices``: auto, a positive integer or a non-empty list of cpu / cuda / cuda:N (whether those CUDA
    devices exist is checked when the workers start: ``infer/workers.py``)."""

    def problem(self, key: str, value: Any) -> str | None:
        if isinstance(value, (list, tuple, ListConfig)):
            names = [str(v).strip() for v in value]
            ok = bool(names) and all(DEVICE_NAME.fullmatch(n) for n in names)
            return None if ok else f"{key}=[{','.join(names)}] {DEVICES_HINT}"
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return None
        return f"{key}={value!r} {DEVICES_HINT}"


Rule = OneOf | Between | Count | Positive | Devices


def checked(default: Any = None, rule: Rule | None = None) -> Any:
    """A field with its default and the rule its value must pass (``None``, i.e. null or absent, always passes)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def rule_of(f: dataclasses.Field) -> Rule | None:
    return f.metadata.get("rule")


class GroupSettings:
    """A config group as a frozen dataclass; ``group`` is its top-level key."""

    group: ClassVar[str]

    @classmethod
    def from_config(cls: type[S], node: Any) -> S:
        """The typed settings of a composed group node (resolved; keys it does not declare are left out). Values are
        checked by ``check_values`` at start-up, not here."""
        plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
        assert isinstance(plain, dict)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in plain.items() if k in names})


@dataclass(frozen=True)
class ModeSettings(GroupSettings):
    group: ClassVar[str] = "mode"
    name: str = checked("joint", OneOf(("joint", "specific")))


@dataclass(frozen=True)
class ModelSettings(GroupSettings):
    group: ClassVar[str] = "model"
    name: str = checked("model")
    source: str = checked("hf", OneOf(("hf", "gguf_wheel", "tiny_random")))
    path: str | None = checked()
    gguf_package: str | None = checked()
    gguf_file: str | None = checked()
    dtype: str = checked("auto", OneOf(("float32", "bfloat16", "float16", "auto")))
    chat_template: str | None = checked()
    lora_target_modules: list[str] = checked([])
    trust_remote_code: bool = checked(False)
    tiny: dict[str, Any] | None = checked()
    attn_implementation: str = checked("sdpa", OneOf(("sdpa", "eager", "flash_attention_2")))


@dataclass(frozen=True)
class PeftSettings(GroupSettings):
    group: ClassVar[str] = "peft"
    name: str = checked("lora")
    quantization: str = checked("none", OneOf(("none", "4bit", "8bit")))
    compute_dtype: str = checked("auto", OneOf(("auto", "float32", "bfloat16", "float16")))
    double_quant: bool = checked(True)
    r: int = checked(8, Count())
    alpha: float = checked(16)
    dropout: float = checked(0.0)
    target_modules: list[str] = checked([])
    gradient_checkpointing: bool = checked(False)


@dataclass(frozen=True)
class PromptSettings(GroupSettings):
    group: ClassVar[str] = "prompt"
    name: str = checked("p1")
    system: str = checked("aware", OneOf(("unaware", "aware", "cct")))
    n_examples: int = checked(0, Count(0))
    n_similar: int | None = checked(None, Count())  # cct prompts: most/least similar cultures named


@dataclass(frozen=True)
class DecodingSettings(GroupSettings):
    group: ClassVar[str] = "decoding"
    mode: str = checked("greedy", OneOf(("sample", "greedy", "logprob")))
    temperature: float = checked(1.0, Between(0.0, 10.0))
    top_p: float = checked(1.0, Between(0.0, 1.0))
    top_k: int = checked(50, Count(0))  # 0 = off
    seed_step: int = checked(1)  # evaluation run r samples with seed + r * seed_step (the paper: -1)
    max_new_tokens: int = checked(16, Count(0))
    reject_option_lists: bool = checked(False)
    parse: str = checked("first_integer", OneOf(("first_integer", "first_valid")))  # infer/parsing.PARSE_RULES


@dataclass(frozen=True)
class DataSettings(GroupSettings):
    group: ClassVar[str] = "data"
    criterion: str = checked("answer", OneOf(("answer", "majority", "distribution", "none")))
    js_threshold: float = checked(0.1, Between(0.0, 1.0, low_inclusive=True))
    samples: int = checked(1)  # checked with the criterion (culturespa.pairs.criteria.config_errors)
    noise_replicates: int = checked(1)
    alpha: float = checked(0.05, Between(0.0, 1.0))
    null_quantile: float = checked(0.95, Between(0.0, 1.0))
    bootstrap: int = checked(1000)
    ci_level: float = checked(0.95, Between(0.0, 1.0))
    fraction: float = checked(1.0, Between(0.0, 1.0))
    val_fraction: float = checked(0.05, Between(0.0, 0.5, low_inclusive=True))
    cutoff_len: int = checked(512, Count())
    system: str = checked("aware", OneOf(("aware", "cct")))
    train_system: str | None = checked(None, OneOf(("aware", "cct")))  # SFT examples' system prompt; null = system
    seed: int = checked(42)


@dataclass(frozen=True)
class EngineSettings(GroupSettings):
    group: ClassVar[str] = "engine"
    batch_size: int = checked(32, Count())
    max_padding: float | None = checked(0.1)
    sort_by_length: bool = checked(True)
    prefix_cache: bool = checked(True)
    device: str = checked("auto")
    prepack: bool = checked(True)
    devices: Any = checked(1, Devices())  # worker processes, one per device (infer/workers.py)
    schedule: str = checked("continuous", OneOf(("continuous", "static")))  # infer/decode.SCHEDULES


@dataclass(frozen=True)
class QuestionsSettings(GroupSettings):
    group: ClassVar[str] = "questions"
    per_topic: int = checked(10, Count())
    topics: Any = checked("all")
    n_examples: int = checked(5, Count())
    n_generated: int = checked(2, Count(0))
    max_retries: int = checked(5, Count(0))
    temperature: float = checked(0.9, Between(0.0, 10.0, low_inclusive=True))  # 0 = greedy
    top_p: float = checked(0.95, Between(0.0, 1.0))
    top_k: int = checked(50, Count(0))  # 0 = off
    max_new_tokens: int = checked(256, Count())
    batch_size: int = checked(16, Count())
    exposure: str = checked("sequential", OneOf(("sequential", "waves")))
    accept: str = checked("lenient", OneOf(("strict", "lenient")))
    output: str = checked("")


@dataclass(frozen=True)
class FilterSettings(GroupSettings):
    group: ClassVar[str] = "filter"
    rules: str = checked("strict", OneOf(("paper", "strict")))
    input: str = checked("")
    output: str = checked("")
    rouge_l_threshold: float | None = checked(None, Between(0.0, 1.0))  # null = off
    limit_per_topic: int | None = checked(None, Count())  # null = all
    seed: int = checked(0)
    non_substantive: str = checked("drop", OneOf(("drop", "strip")))
    scale_note: str | None = checked()  # null: the WVS phrasing (culturespa.questions.paper_filter.DEFAULT_SCALE_NOTE)


@dataclass(frozen=True)
class AnswersSettings(GroupSettings):
    group: ClassVar[str] = "answers"
    setting: str = checked("unaware", OneOf(("unaware", "aware", "cct")))
    input: str = checked("")
    output_dir: str = checked("")
    limit: int | None = checked(None, Count())
    n_similar: int = checked(3, Count())
    resume_chunk: int = checked(256, Count())
    shard: str | None = checked()


@dataclass(frozen=True)
class EvalSettings(GroupSettings):
    group: ClassVar[str] = "eval"
    source: str = checked("model", OneOf(("model", "predictions")))
    adapter: str | None = checked()
    predictions: dict[str, Any] = checked({})
    runs: int = checked(1, Count())
    limit: int | None = checked(None, Count())
    output_dir: str = checked("")
    bootstrap: dict[str, Any] = checked({})
    suite: str = checked("wvs", OneOf(("wvs", "general", "relations")))
    general: dict[str, Any] = checked({})


@dataclass(frozen=True)
class SFTSettings(GroupSettings):
    group: ClassVar[str] = "sft"
    pairs_dir: str = checked("")
    output_dir: str = checked("")
    lr: float = checked(1.0e-4, Between(0.0, 1.0))
    weight_decay: float = checked(0.0)
    epochs: int = checked(1, Count())
    max_steps: int = checked(-1)  # > 0 caps optimiser steps
    warmup_ratio: float = checked(0.1, Between(0.0, 1.0, low_inclusive=True))
    scheduler: str = checked("cosine", OneOf(("cosine", "linear")))
    global_batch_size: int = checked(128, Count())
    micro_batch_size: int = checked(4, Count())
    val_check_interval: float = checked(1.0, Positive())
    save_every_n_steps: int = checked(50, Count())
    checkpoint_minutes: float | None = checked(None, Positive())  # also by wall time (null = steps only)
    resume: bool = checked(True)
    num_workers: int = checked(0, Count(0))
    accelerator: str = checked("auto")
    precision: str = checked("32-true")
    # CUDA only: fp32 matmuls on TF32 tensor cores (set_float32_matmul_precision("high")); +sft.tf32=false: exact fp32.
    # Left out of conf/sft, as packing (the defaults apply), so that stage identities stay as they were.
    tf32: bool = checked(True)
    # +sft.packing=true: each micro-batch's examples in one padding-free row (culturespa.train.datamodule.PackingCollator)
    packing: bool = checked(False)


GROUPS: tuple[type[GroupSettings], ...] = (
    ModeSettings,
    ModelSettings,
    PeftSettings,
    PromptSettings,
    DecodingSettings,
    DataSettings,
    EngineSettings,
    QuestionsSettings,
    FilterSettings,
    AnswersSettings,
    EvalSettings,
    SFTSettings,
)


def check_values(cfg: DictConfig | dict[str, Any]) -> list[str]:
    """One message per value that breaks its field's rule (null and absent keys pass)."""
    errors: list[str] = []
    for cls in GROUPS:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            rule = rule_of(f)
            key = f"{cls.group}.{f.name}"
            value = _value(cfg, key)
            if rule is not None and value is not None and (problem := rule.problem(key, value)):
                errors.append(problem)
    errors += _decoding_problems(cfg)
    gbs, mbs = _value(cfg, "sft.global_batch_size"), _value(cfg, "sft.micro_batch_size")
    if isinstance(gbs, int) and isinstance(mbs, int) and mbs > 0 and gbs % mbs:
        errors.append(f"sft.global_batch_size={gbs} must be a multiple of sft.micro_batch_size={mbs}")
    generated, examples = _value(cfg, "questions.n_generated"), _value(cfg, "questions.n_examples")
    if isinstance(generated, int) and isinstance(examples, int) and generated > examples:
        errors.append(f"questions.n_generated={generated} exceeds questions.n_examples={examples}")
    return errors


def _decoding_problems(cfg: DictConfig | dict[str, Any]) -> list[str]:
    """Decoding rules that span fields: a non-zero integer seed step; generation needs at least one new token."""
    errors = []
    step, mode, new_tokens = (_value(cfg, f"decoding.{k}") for k in ("seed_step", "mode", "max_new_tokens"))
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step == 0):
        errors.append(f"decoding.seed_step={step!r} must be a non-zero integer")
    if mode in ("sample", "greedy") and isinstance(new_tokens, int) and new_tokens < 1:
        errors.append(f"decoding.max_new_tokens={new_tokens!r} must be >= 1 in {mode} mode")
    return errors


def check_group(cls: type[GroupSettings], node: Any) -> None:
    """Raise one line for the first bad value of one group's node (loaders called without the whole config)."""
    errors = check_values({cls.group: dict(node or {})})
    own = [e for e in errors if e.startswith(f"{cls.group}.")]
    if own:
        raise CultureSPAError("; ".join(own))


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of the node at ``key`` (its ``_target_`` with its values, ``kwargs`` over them) as
    plain Python values; a target's own one-line error comes out as it is, any other failure as one line naming
    the key and its target."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, CultureSPAError):
            raise cause from None
        target = node.get("_target_") if isinstance(node, (DictConfig, dict)) else None
        reason = (str(cause or err).strip().splitlines() or [type(cause).__name__])[0]
        raise CultureSPAError(f"{key}._target_={target!r}: cannot build it ({reason})") from None


def _value(cfg: DictConfig | dict[str, Any], key: str) -> Any:
    """``group.name`` from a composed config or from plain ``{group: {name: value}}`` data (None when absent)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.select(cfg, key, default=None)
    group, _, name = key.partition(".")
    node = cfg.get(group)
    return node.get(name) if isinstance(node, dict) else None
