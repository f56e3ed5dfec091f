"""SFT examples from culture-related QA pairs: read and validate the pairs files, split, subsample and tokenize.

Everything file-related is checked before any model is loaded, so a missing or malformed pairs file costs a second,
not a model load. Labels mask the prompt (-100) and keep the answer plus the end-of-turn token that closes it: the
masks are built from token positions, never from ``input_ids != pad`` (SmolLM2's pad token *is* its end-of-turn).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError, fail
from culturespa.prompts.builder import PromptBuilder, PromptStyle, similar_cultures
from culturespa.settings import DataSettings
from culturespa.utils.jsonl import iter_jsonl
from culturespa.wvs.questions import Question

log = logging.getLogger("culturespa.train")

IGNORE_INDEX = -100
# End-of-turn markers of common chat templates; the first one found in the assistant part ends the loss span.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "<end_of_turn>")


@dataclass(frozen=True)
class Pair:
    """One SFT target: a question and the culture-aware answer number."""

    id: str
    culture: str
    topic: str
    question: Question
    answer: int


@dataclass
class CultureSplit:
    """A culture's pairs after the validation split and the quantity subsample."""

    culture: str
    total: int
    train: list[Pair]
    val: list[Pair]


def read_pairs(path: Path, culture: str, allow_empty: bool = False) -> list[Pair]:
    """Read ``{CODE}.jsonl``; every problem is a one-line error naming file, line and field. An empty file is one too,
    unless ``allow_empty`` (a joint run trains on the other cultures)."""
    if not path.is_file():
        raise fail(path, f"pairs file for culture {culture} not found (run `python generate.py stage=pairs` first)")
    pairs: list[Pair] = []
    for number, record in iter_jsonl(path):
        where = f"{path}:{number}"
        for key in ("id", "question", "answer"):
            if key not in record:
                raise fail(where, f"missing field {key!r}")
        if record.get("culture") not in (None, culture):
            raise fail(where, f"culture {record['culture']!r} does not match the file's culture {culture}")
        question = Question.from_record(record["question"], where)
        answer = record["answer"]
        if not isinstance(answer, int) or isinstance(answer, bool) or answer not in question.numbers:
            raise fail(where, f"answer {answer!r} is not an option number of question {question.id} {question.numbers}")
        topic = record.get("topic") or question.topic or ""
        pairs.append(Pair(str(record["id"]), culture, str(topic), question, answer))
    if not pairs and not allow_empty:
        raise fail(path, f"no pairs for culture {culture} (empty file): nothing to train on")
    return pairs


def load_pairs(pairs_dir: str | Path, cultures: Sequence[str], allow_empty: bool = False) -> dict[str, list[Pair]]:
    """All selected cultures' pairs, in culture order; fails on the first missing, malformed or (unless
    ``allow_empty``) empty file."""
    folder = Path(pairs_dir)
    if not folder.is_dir():
        raise fail(folder, "sft.pairs_dir not found (run `python generate.py stage=pairs` first)")
    return {code: read_pairs(folder / f"{code}.jsonl", code, allow_empty) for code in cultures}


def stratified_sample(pairs: Sequence[Pair], fraction: float, seed: int, key: str) -> list[Pair]:
    """A seeded share of ``pairs`` that keeps each topic's proportion (largest-remainder quotas), in input order."""
    if fraction >= 1.0:
        return list(pairs)
    target = max(1, round(len(pairs) * fraction))
    by_topic: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        by_topic.setdefault(pair.topic, []).append(index)
    exact = {t: len(ix) * target / len(pairs) for t, ix in by_topic.items()}
    quota = {t: int(v) for t, v in exact.items()}
    remainder = sorted(by_topic, key=lambda t: (-(exact[t] - quota[t]), t))
    for topic in remainder[: target - sum(quota.values())]:
        quota[topic] += 1
    chosen: list[int] = []
    for topic in sorted(by_topic):
        indices = list(by_topic[topic])
        random.Random(f"{seed}|{key}|{topic}").shuffle(indices)
        chosen.extend(indices[: quota[topic]])
    return [pairs[i] for i in sorted(chosen)]


def split_culture(pairs: Sequence[Pair], val_fraction: float, fraction: float, seed: int) -> CultureSplit:
    """Hold out the validation share first (the same for every ``fraction``, so val losses compare across the
    quantity study), then subsample the rest."""
    culture = pairs[0].culture
    order = list(range(len(pairs)))
    random.Random(f"{seed}|val|{culture}").shuffle(order)
    n_val = round(len(pairs) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(pairs) >= 2:
        n_val = 1
    val_idx = set(order[:n_val])
    val = [p for i, p in enumerate(pairs) if i in val_idx]
    rest = [p for i, p in enumerate(pairs) if i not in val_idx]
    return CultureSplit(culture, len(pairs), stratified_sample(rest, fraction, seed, culture), val)


def prepare_splits(
    pairs_dir: str | Path, data: DataSettings, cultures: Sequence[str], skip_empty: bool = False
) -> dict[str, CultureSplit]:
    """Read, validate and split every selected culture's pairs (no tokenizer or model needed).

    ``skip_empty`` (joint mode): a culture whose pairs file is empty is left out with a warning, since one culture
    without culture-related pairs should not stop the others' adapter; it stops only when every file is empty."""
    pairs = load_pairs(pairs_dir, cultures, allow_empty=skip_empty)
    empty = [code for code, found in pairs.items() if not found]
    if empty and len(empty) == len(pairs):
        raise fail(pairs_dir, f"no pairs for any culture ({', '.join(empty)}: empty files): nothing to train on")
    if empty:
        log.warning(
            "no pairs for %s (empty pairs file): training on the other %d cultures without it",
            ", ".join(empty),
            len(pairs) - len(empty),
        )
        pairs = {code: found for code, found in pairs.items() if found}
    return {
        c: split_culture(p, float(data.val_fraction), float(data.fraction), int(data.seed)) for c, p in pairs.items()
    }


def shuffled(items: Sequence[Any], seed: int, key: str) -> list[Any]:
    out = list(items)
    random.Random(f"{seed}|{key}").shuffle(out)
    return out


class PairChats:
    """The training chat of a pair (system prompt per culture, question, target answer): what SFT tokenizes and what
    ``generate.py stage=export`` writes for other trainers."""

    def __init__(self, style: PromptStyle, system: str, wvs: Any = None) -> None:
        if system == "cct" and wvs is None:
            raise CultureSPAError("data.system=cct needs the WVS similarity data")
        self.builder = PromptBuilder(style)
        self.system = system
        self.n_similar = style.n_similar
        self.wvs = wvs
        self._similar: dict[str, tuple[list[str], list[str]]] = {}

    def similar(self, culture: str) -> tuple[list[str], list[str]]:
        if culture not in self._similar:
            self._similar[culture] = similar_cultures(self.wvs, culture, self.n_similar)
        return self._similar[culture]

    def messages(self, pair: Pair) -> list[dict[str, str]]:
        similar, dissimilar = self.similar(pair.culture) if self.system == "cct" else ([], [])
        return self.builder.sft_messages(pair.question, pair.answer, self.system, pair.culture, similar, dissimilar)


class ExampleEncoder(PairChats):
    """Turns pairs into token ids + labels with the tokenizer's chat template."""

    def __init__(self, tokenizer: Any, style: PromptStyle, system: str, cutoff_len: int, wvs: Any = None) -> None:
        super().__init__(style, system, wvs)
        self.tokenizer = tokenizer
        self.cutoff_len = int(cutoff_len)
        vocab = tokenizer.get_vocab()
        eot = {tokenizer.eos_token_id} | {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
        self.end_of_turn = {i for i in eot if i is not None}

    def encode(self, pair: Pair) -> dict[str, list[int]]:
        return encode_chat(self.tokenizer, self.messages(pair), self.cutoff_len, self.end_of_turn)

    def encode_all(self, pairs: Sequence[Pair]) -> list[dict[str, list[int]]]:
        return [self.encode(p) for p in pairs]


def encode_chat(
    tokenizer: Any, messages: list[dict[str, str]], cutoff_len: int, end_of_turn: set[int]
) -> dict[str, list[int]]:
    """Token ids and labels of a chat whose last message is the assistant's target.

    The prompt is the template with a generation prompt; the completion is what the full chat adds after it, cut
    just after the end-of-turn token (a trailing newline the template adds is not trained). Over-long examples lose
    prompt tokens from the left, never the answer.
    """
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise CultureSPAError("model chat template: the prompt with a generation prompt is not a prefix of the chat")
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    completion_ids = list(tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"])
    for position, token in enumerate(completion_ids):
        if token in end_of_turn:
            completion_ids = completion_ids[: position + 1]
            break
    if len(completion_ids) >= cutoff_len:
        raise fail(
            "data.cutoff_len", f"{cutoff_len} leaves no room for the prompt ({len(completion_ids)} answer tokens)"
        )
    room = cutoff_len - len(completion_ids)
    prompt_ids = prompt_ids[-room:]
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
    }
