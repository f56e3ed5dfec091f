"""Batched answering and free generation on any HF causal LM (plain, PEFT adapter or bitsandbytes-quantised).

Why it is fast: prompts are rendered with the tokenizer's chat template, grouped by their shared system/instruction
prefix, sorted by length within a group and left-padded into batches; the KV cache of a group's common token prefix
is computed once and reused by every batch of the group; only the last position's logits are computed during
prefill; on CPU, fp32 linear weights are prepacked for oneDNN once (``prepack.py``). ``logprob`` mode needs no
generation at all: one forward pass gives the next-token distribution; for questions whose option numbers share
digits ("1" vs "10"; see ``scoring.py``) the digit is appended to the prompt in the same pass, and only numbers whose
prefixes branch ("1" and "2" on a 1..21 scale) need a short second pass.

Why results do not depend on batching: padding is masked out, position ids count real tokens only, a shared prefix
is computed exactly as the same tokens would be at the start of a single prompt, and sampling draws from a generator
per request seeded from (seed, key).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from culturespa import compat
from culturespa.errors import CultureSPAError
from culturespa.infer import sampling
from culturespa.infer.parsing import PARSE_RULES, parse_answer
from culturespa.infer.prepack import LinearPacker
from culturespa.infer.scoring import Context, OptionPlan, continuation_ids, digit_token_ids, normalise

MODES = ("sample", "greedy", "logprob")
MIN_PREFIX_TOKENS = 8  # a shared prefix shorter than this is not worth a separate forward pass
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|endoftext|>", "</s>")


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
        if self.mode not in MODES:
            raise CultureSPAError(f"decoding.mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "sample" and not self.temperature > 0:
            raise CultureSPAError(f"decoding.temperature: {self.temperature} must be > 0 for sampling")
        if not 0 < self.top_p <= 1:
            raise CultureSPAError(f"decoding.top_p: {self.top_p} must be in (0, 1]")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise CultureSPAError(f"decoding.top_k: {self.top_k!r} must be an integer >= 0 (0 = no top-k)")
        if not isinstance(self.seed_step, int) or self.seed_step == 0:
            raise CultureSPAError(f"decoding.seed_step: {self.seed_step!r} must be a non-zero integer")
        if self.parse not in PARSE_RULES:
            raise CultureSPAError(f"decoding.parse: {self.parse!r} is not one of {', '.join(PARSE_RULES)}")
        if self.mode != "logprob" and self.max_new_tokens < 1:
            raise CultureSPAError(f"decoding.max_new_tokens: {self.max_new_tokens} must be >= 1 in {self.mode} mode")

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


@dataclass
class _Item:
    """A rendered request: position in the input, prompt text and token ids."""

    index: int
    request: Request
    prompt: str
    ids: list[int]


@dataclass
class _Batch:
    items: list[_Item]
    prefix: tuple[int, ...]  # shared leading token ids computed once for the group ('' = none)


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
    ) -> None:
        if batch_size < 1:
            raise CultureSPAError(f"engine.batch_size: {batch_size} must be >= 1")
        if max_padding is not None and not max_padding >= 0:
            raise CultureSPAError(f"engine.max_padding: {max_padding} must be >= 0 (or null for fixed-size batches)")
        if getattr(tokenizer, "chat_template", None) is None:
            raise CultureSPAError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')}: it has no chat template")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.sort_by_length = bool(sort_by_length)
        self.prefix_cache = bool(prefix_cache)
        self.max_padding = None if max_padding is None else float(max_padding)
        self.prepack = bool(prepack)
        self._packer: LinearPacker | None = None
        self.device = self._place(model, device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.stop_ids = self._stop_ids(model, tokenizer)
        self._digit_ids: torch.Tensor | None = None
        self._number_cache: dict[tuple[str, int], Context] = {}
        self._keep_logits_ok = True
        self._prefix_kv: tuple[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        model.eval()

    # ---- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any, model: Any = None, tokenizer: Any = None) -> Engine:
        """Engine for ``cfg.model`` (loaded from ``cfg.paths.cache_dir`` unless given) with ``cfg.engine`` settings."""
        from culturespa.models.loader import ModelSpec, load_model, load_tokenizer

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
        """Answer multiple-choice requests; yields one list of results per finished batch, each request once."""
        reqs = list(requests)
        for r in reqs:
            if r.numbers is not None and len(r.numbers) == 0:
                raise CultureSPAError(f"request {r.key}: the question has no option numbers")
            if decoding.mode == "logprob" and r.numbers is None:
                raise CultureSPAError(f"request {r.key}: logprob mode needs option numbers")
        if decoding.mode == "logprob":
            yield from self._run(reqs, desc, lambda batch: self._score_batch(batch), tight=True)
        else:
            greedy = decoding.mode == "greedy"
            yield from self._run(
                reqs,
                desc,
                lambda batch: self._generate_batch(
                    batch,
                    greedy,
                    decoding.temperature,
                    decoding.top_p,
                    decoding.max_new_tokens,
                    seed,
                    decoding.reject_option_lists,
                    decoding.parse,
                    top_k=decoding.top_k,
                ),
            )

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
        greedy = temperature <= 0
        yield from self._run(
            reqs,
            desc,
            lambda batch: self._generate_batch(batch, greedy, temperature, top_p, max_new_tokens, seed, top_k=top_k),
        )

    # ---- planning -------------------------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text the model sees: the chat template with the generation prompt appended."""
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # jinja errors: bad roles, alternation
            raise CultureSPAError(f"chat template: cannot render messages ({err})") from None

    def _prepare(self, reqs: Sequence[Request]) -> list[_Item]:
        items = []
        for i, r in enumerate(reqs):
            if not r.messages:
                raise CultureSPAError(f"request {r.key}: no messages")
            prompt = self.render(r.messages) + r.prefix
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if not ids:
                raise CultureSPAError(f"request {r.key}: the prompt tokenises to nothing")
            items.append(_Item(i, r, prompt, list(ids)))
        return items

    def _plan(self, items: list[_Item], tight: bool = False) -> list[_Batch]:
        """Batches, grouped by shared context (all messages but the last) so a group's common prefix is computed
        once; within a group (and in the pool of ungrouped requests) sorted by length to waste less padding.
        ``tight`` (prefill-only work: logprob scoring) also bounds padding by ``max_padding``; generation keeps full
        batches, since every extra batch repeats all its decode steps."""
        groups: dict[str, list[_Item]] = {}
        if self.prefix_cache:
            for it in items:
                groups.setdefault(json.dumps(it.request.messages[:-1], sort_keys=True), []).append(it)
        else:
            groups[""] = list(items)
        batches: list[_Batch] = []
        pool: list[_Item] = []
        for members in groups.values():
            prefix = _common_prefix([m.ids for m in members]) if self.prefix_cache and len(members) > 1 else ()
            if len(prefix) < MIN_PREFIX_TOKENS:
                pool.extend(members)
                continue
            batches.extend(_Batch(chunk, prefix) for chunk in self._chunks(members, len(prefix), tight))
        batches.extend(_Batch(chunk, ()) for chunk in self._chunks(pool, 0, tight))
        return batches

    def _chunks(self, members: list[_Item], prefix_len: int, tight: bool) -> Iterator[list[_Item]]:
        """At most ``batch_size`` rows; with ``max_padding`` a batch also closes before its pad tokens would exceed
        that share of its real tokens (the prefix is shared, not padded). Padding is pure waste in matmuls and
        attention: 32 WVS prompts of one culture in one batch add ~84 % padding, which costs more than the smaller
        matmuls of tighter batches (docs/benchmarks.md)."""
        ordered = sorted(members, key=lambda m: (len(m.ids), m.index)) if self.sort_by_length else members
        batch: list[_Item] = []
        real = width = 0
        for item in ordered:
            length = len(item.ids) - prefix_len
            wider = max(width, length)
            too_padded = (
                tight
                and self.max_padding is not None
                and batch
                and (len(batch) + 1) * wider > (1 + self.max_padding) * (real + length)
            )
            if len(batch) == self.batch_size or too_padded:
                yield batch
                batch, real, wider = [], 0, length
            batch.append(item)
            real += length
            width = wider
        if batch:
            yield batch

    def _run(self, reqs: list[Request], desc: str | None, work: Any, tight: bool = False) -> Iterator[list[Result]]:
        from tqdm.auto import tqdm

        if not reqs:
            return
        items = self._prepare(reqs)
        self._prefix_kv = None
        with (
            self._packing(),
            tqdm(total=len(items), desc=desc or "infer", unit="req", disable=None if desc is None else False) as bar,
        ):
            for batch in self._plan(items, tight):
                with torch.inference_mode():
                    results = work(batch)
                bar.update(len(results))
                yield results
        self._prefix_kv = None

    def _packing(self) -> AbstractContextManager[int]:
        """Prepacked fp32 CPU linear weights for the duration of a run (``engine.prepack``; see prepack.py)."""
        if not self.prepack:
            return nullcontext(0)
        if self._packer is None or self._packer.model is not self.model:
            self._packer = LinearPacker(self.model)
        return self._packer.active()

    # ---- forward passes -------------------------------------------------------------------------------------------
    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, keep: int
    ) -> tuple[torch.Tensor, Any]:
        """Logits of the last ``keep`` positions (float32) and the updated cache."""
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        if self._keep_logits_ok:
            try:
                out = self.model(**kwargs, logits_to_keep=keep)
            except TypeError:
                self._keep_logits_ok = False
                out = self.model(**kwargs)
        else:
            out = self.model(**kwargs)
        return out.logits[:, -keep:, :].float(), out.past_key_values

    def _prefix_cache(self, prefix: tuple[int, ...], batch_size: int) -> Any:
        """A fresh cache holding ``prefix`` for every row; the prefix itself is computed once per group."""
        from transformers import DynamicCache

        if self._prefix_kv is None or self._prefix_kv[0] != prefix:
            ids = torch.tensor([prefix], device=self.device)
            pos = torch.arange(len(prefix), device=self.device)[None]
            out = self.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=pos,
                past_key_values=DynamicCache(config=self._config()),
                use_cache=True,
                **({"logits_to_keep": 1} if self._keep_logits_ok else {}),
            )
            self._prefix_kv = (prefix, compat.cache_layers(out.past_key_values))
        layers = [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self._prefix_kv[1]]
        return compat.filled_cache(layers, self._config())

    def _config(self) -> Any:
        config = getattr(self.model, "config", None)
        return config if config is not None and hasattr(config, "get_text_config") else None

    def _prefill(
        self, batch: _Batch, extra: Sequence[Context] | None = None, keep: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Run every prompt of the batch, each followed by its ``extra`` tokens; returns the logits of the last
        ``keep`` columns [B, keep, V], the attention mask, each row's last position id and the cache. Rows are
        right-aligned (left padding), so column -1 is every row's last token."""
        plen = len(batch.prefix)
        suffixes = [it.ids[plen:] + list(extra[i] if extra else ()) for i, it in enumerate(batch.items)]
        width = max(len(s) for s in suffixes)
        rows, mask = [], []
        for s in suffixes:
            rows.append([self.pad_id] * (width - len(s)) + s)
            mask.append([0] * (width - len(s)) + [1] * len(s))
        input_ids = torch.tensor(rows, device=self.device)
        suffix_mask = torch.tensor(mask, device=self.device)
        positions = (plen + torch.cumsum(suffix_mask, dim=1) - 1).clamp(min=0)
        bsz = len(rows)
        if plen:
            cache = self._prefix_cache(batch.prefix, bsz)
            full_mask = torch.cat([torch.ones(bsz, plen, dtype=suffix_mask.dtype, device=self.device), suffix_mask], 1)
        else:
            from transformers import DynamicCache

            cache = DynamicCache(config=self._config())
            full_mask = suffix_mask
        logits, cache = self._forward(input_ids, full_mask, positions, cache, keep=keep)  # keep <= width: each row
        # holds >= 1 prompt token after its extra tokens
        return logits, full_mask, positions[:, -1], cache

    def _generate_batch(
        self,
        batch: _Batch,
        greedy: bool,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int,
        reject_option_lists: bool = False,
        parse: str = "first_integer",
        top_k: int = sampling.DEFAULT_TOP_K,
    ) -> list[Result]:
        logits, mask, last_pos, cache = self._prefill(batch)
        logits = logits[:, -1, :]
        bsz = logits.shape[0]
        gens = None if greedy else sampling.make_generators(seed, [it.request.key for it in batch.items], self.device)
        stop = torch.tensor(sorted(self.stop_ids), device=self.device, dtype=torch.long)
        done = torch.zeros(bsz, dtype=torch.bool, device=self.device)
        produced: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            token = sampling.choose(logits, greedy, temperature, top_p, gens, top_k)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            produced.append(token)
            done = done | torch.isin(token, stop)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(bsz, 1, dtype=mask.dtype, device=self.device)], dim=1)
            last_pos = last_pos + 1
            logits, cache = self._forward(token[:, None], mask, last_pos[:, None], cache, keep=1)
            logits = logits[:, -1, :]
        tokens = torch.stack(produced, dim=1).tolist() if produced else [[] for _ in range(bsz)]
        results = []
        for it, row in zip(batch.items, tokens, strict=True):
            kept = []
            for t in row:
                if t in self.stop_ids:
                    break
                kept.append(t)
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            numbers = it.request.numbers
            answer = parse_answer(text, numbers, reject_option_lists, parse) if numbers is not None else None
            valid = answer is not None if numbers is not None else bool(text.strip())
            results.append(Result(it.request.key, text, answer, valid, None, it.prompt))
        return results

    # ---- logprob scoring ------------------------------------------------------------------------------------------
    def _number_ids(self, prompt: str, number: int) -> Context:
        tail = prompt[-48:]
        key = (tail, number)
        if key not in self._number_cache:
            self._number_cache[key] = continuation_ids(self.tokenizer, tail, str(number))
        return self._number_cache[key]

    def _digits(self) -> torch.Tensor:
        if self._digit_ids is None:
            self._digit_ids = torch.tensor(digit_token_ids(self.tokenizer), dtype=torch.long, device=self.device)
        return self._digit_ids

    def _score_batch(self, batch: _Batch) -> list[Result]:
        plans = []
        for it in batch.items:
            numbers = list(it.request.numbers or [])
            plans.append(OptionPlan.build(numbers, {n: self._number_ids(it.prompt, n) for n in numbers}))
        # A row whose contexts form one chain ("1" for a 1..10 scale) gets its longest context appended to the prompt:
        # the columns of the same forward pass then hold the distributions after every context, so the common case
        # costs one pass. Other rows (e.g. 1..21: "1" and "2") are scored by a second pass over their cache.
        chains = [_chain(plan.contexts) for plan in plans]
        extra = [chain or () for chain in chains]
        keep = 1 + max(len(e) for e in extra)
        logits, mask, last_pos, cache = self._prefill(batch, extra, keep)
        logp = torch.log_softmax(logits, dim=-1)  # [B, keep, V]
        digit_mass = torch.exp(logp.index_select(2, self._digits())).sum(dim=2)  # [B, keep]
        after: dict[int, dict[Context, dict[int, float]]] = {}
        cont: dict[int, dict[Context, float]] = {}
        first_col = []
        for row, (plan, appended) in enumerate(zip(plans, extra, strict=True)):
            start = keep - 1 - len(appended)  # column of the prompt's last token
            first_col.append(start)
            for j in range(1, len(appended) + 1):
                ctx = appended[:j]
                after.setdefault(row, {})[ctx] = {t: float(logp[row, start + j, t]) for t in _wanted(plan, ctx)}
                cont.setdefault(row, {})[ctx] = float(digit_mass[row, start + j])
        unfolded = [row for row, chain in enumerate(chains) if chain is None]
        if unfolded:
            more_after, more_cont = self._score_contexts(plans, unfolded, mask, last_pos, cache)
            after.update(more_after)
            cont.update(more_cont)
        results = []
        for row, (it, plan) in enumerate(zip(batch.items, plans, strict=True)):
            needed = {seq[0] for seq in plan.sequences.values()}
            first_row = {t: float(logp[row, first_col[row], t]) for t in needed}
            scores = plan.scores(first_row, after.get(row, {}), cont.get(row, {}))
            best, dist = normalise(scores)
            results.append(Result(it.request.key, str(best), best, True, dist, it.prompt))
        return results

    def _score_contexts(
        self, plans: list[OptionPlan], rows: list[int], mask: torch.Tensor, last_pos: torch.Tensor, cache: Any
    ) -> tuple[dict[int, dict[Context, dict[int, float]]], dict[int, dict[Context, float]]]:
        """One extra forward over the prompt caches of ``rows`` for each of their contexts: the next-token log-probs
        after each context (only the tokens the plans need) and the probability that a digit follows it."""
        pairs = [(row, ctx) for row in rows for ctx in plans[row].contexts]
        if not pairs:
            return {}, {}

        index = torch.tensor([r for r, _ in pairs], device=self.device)
        width = max(len(c) for _, c in pairs)
        ids = torch.tensor([list(c) + [self.pad_id] * (width - len(c)) for _, c in pairs], device=self.device)
        layers = [
            (keys.index_select(0, index), values.index_select(0, index)) for keys, values in compat.cache_layers(cache)
        ]
        sub_cache = compat.filled_cache(layers, self._config())
        ctx_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for _, c in pairs], device=self.device)
        full_mask = torch.cat([mask.index_select(0, index), ctx_mask.to(mask.dtype)], dim=1)
        positions = last_pos.index_select(0, index)[:, None] + 1 + torch.arange(width, device=self.device)[None]
        logits, _ = self._forward(ids, full_mask, positions, sub_cache, keep=width)
        ends = torch.tensor([len(c) - 1 for _, c in pairs], device=self.device)
        picked = logits[torch.arange(len(pairs), device=self.device), ends]  # distribution after each context
        logp = torch.log_softmax(picked, dim=-1)
        digit_mass = torch.exp(logp.index_select(1, self._digits())).sum(dim=1).tolist()
        after: dict[int, dict[Context, dict[int, float]]] = {}
        cont: dict[int, dict[Context, float]] = {}
        for k, (row, ctx) in enumerate(pairs):
            after.setdefault(row, {})[ctx] = {t: float(logp[k, t]) for t in _wanted(plans[row], ctx)}
            cont.setdefault(row, {})[ctx] = float(digit_mass[k])
        return after, cont


def _chain(contexts: Sequence[Context]) -> Context | None:
    """The longest context when every context is a prefix of it (``()`` when there are none), else None."""
    if not contexts:
        return ()
    longest = max(contexts, key=len)
    return longest if all(longest[: len(c)] == c for c in contexts) else None


def _wanted(plan: OptionPlan, ctx: Context) -> set[int]:
    """Tokens that continue ``ctx`` towards one of the plan's option numbers."""
    return {seq[len(ctx)] for seq in plan.sequences.values() if len(seq) > len(ctx) and seq[: len(ctx)] == ctx}


def _common_prefix(seqs: list[list[int]]) -> tuple[int, ...]:
    """Longest common leading token run, leaving at least one token of every sequence to run as its suffix."""
    if not seqs:
        return ()
    limit = min(len(s) for s in seqs) - 1
    first = seqs[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return tuple(first[:n])
