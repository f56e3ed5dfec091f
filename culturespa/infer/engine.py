"""Batched answering and free generation on any HF causal LM (plain, PEFT adapter or bitsandbytes-quantised).

Why it is fast: prompts are rendered with the tokenizer's chat template, grouped by their shared system/instruction
prefix and sorted by length (``planning.py``); the KV cache of a group's common token prefix is computed once and
reused by every row of the group; only the last position's logits are computed during prefill (``passes.py``); on
CPU, fp32 linear weights are prepacked for oneDNN once (``prepack.py``). Generation retires each row the step its
reply ends and refills the freed slots with waiting prompts (``decode.py``), so the work follows the tokens
generated. ``logprob`` mode needs no generation at all (``logprob.py``).

Why results do not depend on batching: padding is masked out, position ids count real tokens only, a shared prefix
is computed exactly as the same tokens would be at the start of a single prompt, and sampling draws from a generator
per request seeded from (seed, key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from tqdm.auto import tqdm

from culturespa.errors import CultureSPAError
from culturespa.infer import sampling
from culturespa.infer.decode import DEFAULT_REFILL, SCHEDULES, Decoder, DecodeStats, Policy
from culturespa.infer.decoding import Decoding, Request, Result
from culturespa.infer.logprob import Scorer
from culturespa.infer.parsing import parse_answer
from culturespa.infer.passes import Passes
from culturespa.infer.planning import Batch, Item, Planner, prepare
from culturespa.infer.prepack import LinearPacker

__all__ = ["Decoding", "Engine", "Request", "Result"]  # the answer loops read the request types from here

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|endoftext|>", "</s>")
Work = Callable[[list[Item]], Iterator[list[Result]]]


class Engine:
    """Answers multiple-choice requests (``answer``) and generates free text (``generate``) in batches."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 32,
        sort_by_length: bool = True,
        prefix_cache: bool = True,
        device: str = "auto",
        max_padding: float | None = 0.1,
        prepack: bool = True,
        schedule: str = "continuous",
        refill: float = DEFAULT_REFILL,
    ) -> None:
        if batch_size < 1:
            raise CultureSPAError(f"engine.batch_size: {batch_size} must be >= 1")
        if max_padding is not None and not max_padding >= 0:
            raise CultureSPAError(f"engine.max_padding: {max_padding} must be >= 0 (or null for fixed-size batches)")
        if schedule not in SCHEDULES:
            raise CultureSPAError(f"engine.schedule: {schedule!r} is not one of {', '.join(SCHEDULES)}")
        if getattr(tokenizer, "chat_template", None) is None:
            raise CultureSPAError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')}: it has no chat template")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.sort_by_length = bool(sort_by_length)
        self.prefix_cache = bool(prefix_cache)
        self.max_padding = None if max_padding is None else float(max_padding)
        self.prepack = bool(prepack)
        self.schedule = schedule
        self.refill = float(refill)
        self.stats = DecodeStats()  # decode row-steps over this engine's life (read by the bench)
        self._packer: LinearPacker | None = None
        self.device = self._place(model, device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.stop_ids = self._stop_ids(model, tokenizer)
        self._passes: Passes | None = None
        model.eval()

    # ---- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any, model: Any = None, tokenizer: Any = None) -> Engine:
        """Engine for ``cfg.model`` (loaded from ``cfg.paths.cache_dir`` unless given) with ``cfg.engine`` settings."""
        from culturespa.models.loader import ModelSpec, load_model, load_tokenizer  # loads transformers

        eng = cfg.engine
        spec = ModelSpec.from_config(cfg.model)
        cache = cfg.paths.get("cache_dir") if hasattr(cfg.paths, "get") else None
        if tokenizer is None:
            tokenizer = load_tokenizer(spec, cache)
        if model is None:
            device = str(eng.get("device", "auto"))
            model = load_model(spec, cache, device=None if device == "auto" else device)
        return cls(
            model,
            tokenizer,
            batch_size=int(eng.get("batch_size", 32)),
            sort_by_length=bool(eng.get("sort_by_length", True)),
            prefix_cache=bool(eng.get("prefix_cache", True)),
            device=str(eng.get("device", "auto")),
            max_padding=eng.get("max_padding", 0.1),
            prepack=bool(eng.get("prepack", True)),
            schedule=str(eng.get("schedule", "continuous")),
        )

    @staticmethod
    def _place(model: Any, device: str) -> torch.device:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            target = torch.device(device)
        except RuntimeError:
            raise CultureSPAError(
                f"engine.device: {device!r} is not a torch device (auto | cpu | cuda | cuda:N)"
            ) from None
        if target.type == "cuda" and not torch.cuda.is_available():
            raise CultureSPAError(f"engine.device: {device!r} but no CUDA device is available")
        placed = getattr(model, "hf_device_map", None) is not None
        quantised = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if placed or quantised:  # already dispatched by from_pretrained; moving would break it
            return next(model.parameters()).device
        model.to(target)
        return target

    @staticmethod
    def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
        return ids

    # ---- public API -----------------------------------------------------------------------------------------------
    def answer(
        self, requests: Iterable[Request], decoding: Decoding, seed: int = 0, desc: str | None = None
    ) -> Iterator[list[Result]]:
        """Answer multiple-choice requests; yields lists of results as rows finish, each request once."""
        reqs = list(requests)
        for r in reqs:
            if r.numbers is not None and len(r.numbers) == 0:
                raise CultureSPAError(f"request {r.key}: the question has no option numbers")
            if decoding.mode == "logprob" and r.numbers is None:
                raise CultureSPAError(f"request {r.key}: logprob mode needs option numbers")
        if decoding.mode == "logprob":
            yield from self._run(reqs, desc, self._score)
            return
        policy = self._policy(
            decoding.mode == "greedy",
            decoding.temperature,
            decoding.top_p,
            decoding.top_k,
            decoding.max_new_tokens,
            seed,
        )
        yield from self._run(reqs, desc, lambda items: self._decode(items, policy, decoding))

    def generate(
        self,
        requests: Iterable[Request],
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int = 0,
        desc: str | None = None,
        top_k: int = sampling.DEFAULT_TOP_K,
    ) -> Iterator[list[Result]]:
        """Free text (question generation): sampled at ``temperature`` (0 = greedy) from the ``top_k`` then
        ``top_p`` nucleus; ``answer`` is None and ``valid`` says whether any text came back."""
        if max_new_tokens < 1:
            raise CultureSPAError(f"max_new_tokens: {max_new_tokens} must be >= 1")
        if not 0 < top_p <= 1:
            raise CultureSPAError(f"top_p: {top_p} must be in (0, 1]")
        if top_k < 0:
            raise CultureSPAError(f"top_k: {top_k} must be >= 0 (0 = no top-k)")
        reqs = [Request(r.key, r.messages, None, r.prefix) for r in requests]  # the reply continues the prefix
        policy = self._policy(temperature <= 0, temperature, top_p, top_k, max_new_tokens, seed)
        yield from self._run(reqs, desc, lambda items: self._decode(items, policy, None))

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text the model sees: the chat template with the generation prompt appended."""
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # jinja errors: bad roles, alternation
            raise CultureSPAError(f"chat template: cannot render messages ({err})") from None

    # ---- planning (the current engine.* settings) -----------------------------------------------------------------
    def _planner(self) -> Planner:
        return Planner(self.batch_size, self.sort_by_length, self.prefix_cache, self.max_padding)

    def _prepare(self, reqs: Sequence[Request]) -> list[Item]:
        return prepare(reqs, self.render, self.tokenizer)

    def _plan(self, items: list[Item], tight: bool = False) -> list[Batch]:
        return self._planner().plan(items, tight)

    # ---- running --------------------------------------------------------------------------------------------------
    def _run(self, reqs: list[Request], desc: str | None, work: Work) -> Iterator[list[Result]]:
        if not reqs:
            return
        items = self._prepare(reqs)
        self._passes = Passes(self.model, self.device, self.pad_id)
        with (
            self._packing(),
            tqdm(total=len(items), desc=desc or "infer", unit="req", disable=None if desc is None else False) as bar,
        ):
            for results in _inference(work(items)):
                bar.update(len(results))
                yield results
        self._passes = None

    def _packing(self) -> AbstractContextManager[int]:
        """Prepacked fp32 CPU linear weights for the duration of a run (``engine.prepack``; see prepack.py)."""
        if not self.prepack:
            return nullcontext(0)
        if self._packer is None or self._packer.model is not self.model:
            self._packer = LinearPacker(self.model)
        return self._packer.active()

    def _score(self, items: list[Item]) -> Iterator[list[Result]]:
        assert self._passes is not None
        scorer = Scorer(self._passes, self.tokenizer)
        for batch in self._plan(items, tight=True):
            yield scorer.score(batch)

    def _policy(
        self, greedy: bool, temperature: float, top_p: float, top_k: int, max_new_tokens: int, seed: int
    ) -> Policy:
        return Policy(greedy, temperature, top_p, top_k, max_new_tokens, seed, frozenset(self.stop_ids))

    def _decode(self, items: list[Item], policy: Policy, decoding: Decoding | None) -> Iterator[list[Result]]:
        """Replies in the planned order: continuously batched (rows yielded as they finish) or batch by batch."""
        assert self._passes is not None
        decoder = Decoder(self._passes, self.batch_size, self.refill, self.stats)
        batches = self._plan(items)
        if self.schedule == "static":
            for batch in batches:
                yield [self._result(it, tokens, decoding) for it, tokens in decoder.static(batch.items, policy)]
            return
        ordered = [it for batch in batches for it in batch.items]
        done: list[Result] = []
        for finished in decoder.continuous(ordered, policy):
            done += [self._result(it, tokens, decoding) for it, tokens in finished]
            if len(done) >= self.batch_size:
                yield done
                done = []
        if done:
            yield done

    def _result(self, item: Item, tokens: list[int], decoding: Decoding | None) -> Result:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        numbers = item.request.numbers
        answer = None
        if numbers is not None and decoding is not None:
            answer = parse_answer(text, numbers, decoding.reject_option_lists, decoding.parse)
        valid = answer is not None if numbers is not None else bool(text.strip())
        return Result(item.request.key, text, answer, valid, None, item.prompt)


def _inference(results: Iterator[list[Result]]) -> Iterator[list[Result]]:
    """Each step of ``results`` under ``torch.inference_mode`` (not held while the caller handles a yielded list)."""
    while True:
        with torch.inference_mode():
            chunk = next(results, None)
        if chunk is None:
            return
        yield chunk
