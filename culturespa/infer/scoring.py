"""Exact log-probabilities of option numbers as the next answer, including numbers that take several tokens.

What is scored: the probability that the reply *starts with* the number's token sequence, times — only when the number
is a string prefix of another valid option number ("1" with "10" and "11" present) — the probability that the next
token does not continue the number with a digit. The scored events are therefore disjoint ("1" then a non-digit,
"10", "11", "2", ...) and each matches what :func:`culturespa.infer.parsing.parse_answer` would read as that option.
Numbers that are no prefix of another (all options of a 4-option question) are scored by their tokens alone, so a
question with fewer than 10 options costs a single forward pass.

The extra tokens are scored as *contexts*: every proper token prefix of a number, plus the full sequence of a
number that needs the terminator factor. All contexts of a batch run in one extra forward over the prompt's KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

Context = tuple[int, ...]


@dataclass
class OptionPlan:
    """Which token sequences to score for one request's option numbers, and how to combine them."""

    numbers: list[int]
    sequences: dict[int, Context]  # number -> its token ids as a continuation of the prompt
    terminated: set[int] = field(default_factory=set)  # numbers that must be followed by a non-digit
    contexts: list[Context] = field(default_factory=list)  # token prefixes whose next-token distribution is needed

    @classmethod
    def build(cls, numbers: Sequence[int], sequences: dict[int, Context]) -> OptionPlan:
        texts = {n: str(n) for n in numbers}
        terminated = {n for n in numbers if any(m != n and texts[m].startswith(texts[n]) for m in numbers)}
        contexts: set[Context] = set()
        for n in numbers:
            seq = sequences[n]
            if not seq:
                raise ValueError(f"option number {n} tokenises to nothing")
            contexts.update(seq[:j] for j in range(1, len(seq)))
            if n in terminated:
                contexts.add(seq)
        return cls(list(numbers), sequences, terminated, sorted(contexts, key=lambda c: (len(c), c)))

    def scores(
        self,
        first: Sequence[float] | dict[int, float],
        after: dict[Context, dict[int, float]],
        continue_prob: dict[Context, float],
    ) -> dict[int, float]:
        """Log-score per number from ``first`` (log-probs of the first answer token, indexable by token id),
        ``after[ctx][tok]`` (log-prob of ``tok`` after the context) and ``continue_prob[ctx]`` (probability that a
        digit-starting token follows the context)."""
        out: dict[int, float] = {}
        for n in self.numbers:
            seq = self.sequences[n]
            total = float(first[seq[0]])
            for j in range(1, len(seq)):
                total += after[seq[:j]][seq[j]]
            if n in self.terminated:
                total += math.log(max(1.0 - continue_prob[seq], 1e-30))
            out[n] = total
        return out


def normalise(scores: dict[int, float]) -> tuple[int, dict[int, float]]:
    """Argmax (the smallest number on a tie) and the distribution renormalised over the valid numbers."""
    top = max(scores.values())
    weights = {n: math.exp(s - top) for n, s in scores.items()}
    total = sum(weights.values())
    dist = {n: w / total for n, w in weights.items()}
    best = min(n for n, s in scores.items() if s == top)
    return best, dist


def digit_token_ids(tokenizer: object) -> list[int]:
    """Token ids whose text starts with a digit: after a number they would extend it (e.g. "1" then "0")."""
    vocab_size = len(tokenizer)  # type: ignore[arg-type]
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))  # type: ignore[attr-defined]
    return [i for i, tok in enumerate(tokens) if isinstance(tok, str) and tok[:1].isdigit()]


def continuation_ids(tokenizer: object, prompt: str, text: str) -> Context:
    """Token ids ``text`` gets when it directly follows ``prompt`` (so merges across the boundary are respected);
    falls back to tokenising ``text`` alone if the prompt's own tokens change."""
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # type: ignore[operator]  # noqa: E731
    base = encode(prompt)
    full = encode(prompt + text)
    if full[: len(base)] == base and len(full) > len(base):
        return tuple(full[len(base) :])
    return tuple(encode(text))
