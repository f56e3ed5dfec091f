"""What the engine is asked (:class:`Request`), what it returns (:class:`Result`) and how it decodes (:class:`Decoding`).

Decoding values are checked in one place, ``culturespa.settings`` (``DecodingSettings`` and its cross-field rules):
the same check guards a composed config at start-up and a ``Decoding`` built in code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from culturespa.infer import sampling
from culturespa.settings import DecodingSettings, check_group


@dataclass
class Request:
    key: str
    messages: list[dict[str, str]]
    numbers: list[int] | None = None  # valid option numbers; None = free generation
    prefix: str = ""  # text the assistant turn starts with (the reply continues it; Result.text excludes it)


@dataclass
class Result:
    key: str
    text: str
    answer: int | None
    valid: bool
    distribution: dict[int, float] | None
    prompt: str


@dataclass
class Decoding:
    mode: str
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    top_k: int = sampling.DEFAULT_TOP_K  # sampling keeps the k most likely tokens before top-p; 0 = no cut
    seed_step: int = 1  # evaluation run r samples with seed + r * seed_step (the paper: 42 - r, step -1)
    reject_option_lists: bool = False  # a reply that enumerates the options is invalid (see parsing.py)
    parse: str = "first_integer"  # first_integer (the paper) | first_valid (see parsing.py)

    def __post_init__(self) -> None:
        check_group(DecodingSettings, asdict(self))  # one home for the value rules: settings.py

    @classmethod
    def from_config(cls, node: Any) -> Decoding:
        """From ``cfg.decoding`` (conf/decoding/*.yaml)."""
        get = node.get if hasattr(node, "get") else lambda k, d=None: getattr(node, k, d)
        return cls(
            mode=str(get("mode", "greedy")),
            temperature=float(get("temperature", 1.0)),
            top_p=float(get("top_p", 1.0)),
            max_new_tokens=int(get("max_new_tokens", 16)),
            top_k=int(get("top_k", sampling.DEFAULT_TOP_K)),
            seed_step=int(get("seed_step", 1)),
            reject_option_lists=bool(get("reject_option_lists", False)),
            parse=str(get("parse", "first_integer")),
        )

    def run_seed(self, seed: int, run: int) -> int:
        """The sampling seed of evaluation run ``run`` (0-based)."""
        return seed + run * self.seed_step
