"""Pull a generated survey question out of a model reply, under one of two rules (``questions.accept``).

``strict`` is the paper's: the whole reply must parse as one JSON object (``json.loads``) holding ``Question`` or
``question`` and ``Options`` or ``options``; its text is kept as written. ``lenient`` (ours, the CPU demo's default)
accepts more. Models wrap the JSON in code fences or prose, write key variants ("question", "QUESTION", "Question:") and sometimes
reproduce the paper's malformed example ``{"Question:" "...", "Options": [...]}`` (no colon after the key). We repair
those cases instead of wasting a retry; anything that still is not a question with at least two options is rejected
with a short reason that the questions stage counts.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
# {"Question:" "text"  ->  {"Question": "text"   (the paper's prompt example has this typo)
_KEY_COLON_INSIDE = re.compile(r'"\s*([A-Za-z_ ]+?)\s*:\s*"\s*(?=")')
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_QUESTION_KEYS = ("question", "questiontext", "text", "q")
_OPTION_KEYS = ("options", "option", "optionlst", "optionlist", "choices", "answers", "answeroptions")


@dataclass(frozen=True)
class Extracted:
    question: str
    options: list[str]


def _norm_key(key: object) -> str:
    return re.sub(r"[^a-z]", "", str(key).lower())


def _candidates(text: str) -> list[str]:
    """Substrings that may hold the JSON object: fenced blocks first, then the whole reply."""
    blocks = [m.group(1) for m in _FENCE.finditer(text)]
    return [*blocks, text]


def _objects(text: str) -> list[Any]:
    """Every JSON-ish object that starts at a ``{`` in ``text`` (strict JSON, then light repairs, then a Python
    literal), in order of appearance."""
    found: list[Any] = []
    decoder = json.JSONDecoder(strict=False)  # raw newlines inside strings are common in replies
    start = text.find("{")
    while start != -1:
        chunk = text[start:]
        obj = None
        try:
            obj, _ = decoder.raw_decode(chunk)
        except json.JSONDecodeError:
            end = _matching_brace(chunk)
            if end is not None:
                obj = _repair(chunk[: end + 1])
        if isinstance(obj, dict):
            found.append(obj)
        start = text.find("{", start + 1)
    return found


def _matching_brace(chunk: str) -> int | None:
    """Index of the brace closing ``chunk[0]``, skipping braces inside double-quoted strings."""
    depth, in_str, escaped = 0, False, False
    for i, ch in enumerate(chunk):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _repair(snippet: str) -> Any:
    fixed = _KEY_COLON_INSIDE.sub(lambda m: f'"{m.group(1)}": ', snippet)
    fixed = _TRAILING_COMMA.sub(r"\1", fixed)
    for attempt in (fixed, snippet):
        try:
            return json.loads(attempt, strict=False)
        except json.JSONDecodeError:
            pass
        try:
            return ast.literal_eval(attempt)  # single-quoted, Python-style dicts
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return None


def _as_question(obj: dict[str, Any]) -> Extracted | str:
    keys = {_norm_key(k): v for k, v in obj.items()}
    question = next((keys[k] for k in _QUESTION_KEYS if k in keys), None)
    options = next((keys[k] for k in _OPTION_KEYS if k in keys), None)
    if not isinstance(question, str) or not question.strip():
        return "no question text"
    if isinstance(options, dict):
        options = list(options.values())
    if not isinstance(options, list):
        return "no options list"
    clean = [str(o).strip() for o in options if isinstance(o, (str, int, float)) and str(o).strip()]
    if len(clean) < 2 or len(clean) != len(options):
        return "fewer than two usable options"
    return Extracted(" ".join(question.split()), clean)


def extract_question(text: str) -> Extracted | str:
    """The first object in ``text`` that is a question with options, or a short reason why there is none."""
    reason = "no JSON object"
    for candidate in _candidates(text):
        for obj in _objects(candidate):
            got = _as_question(obj)
            if isinstance(got, Extracted):
                return got
            reason = got
    return reason


def strict_question(text: str) -> Extracted | str:
    """The paper's acceptance: ``json.loads`` of the whole reply, its ``Question``/``question`` and
    ``Options``/``options`` (capitalised key first), kept verbatim. The one addition: the question must be a string
    and the options a non-empty list (a question record needs both; numbers in the list are kept as their text)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return "reply is not one JSON object"
    if not isinstance(obj, dict):
        return "reply is not one JSON object"
    question = obj["Question"] if "Question" in obj else obj.get("question")
    options = obj["Options"] if "Options" in obj else obj.get("options")
    if not isinstance(question, str) or not question:
        return "no question text"
    if not isinstance(options, list) or not options:
        return "no options list"
    return Extracted(question, [o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in options])
