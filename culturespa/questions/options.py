"""Per-question format rules of the filter stage: option numbering, numeric scales and non-substantive options.

Rules, derived from the paper's 13,000-question pool (``data/generated-questions-llama3-8b-instruct``):

* A list is *numbered* when every option is ``N``, ``N. label``, ``N) label``, ``N: label``, ``N - label`` or
  ``N (label)`` and the numbers run consecutively from 0 or 1. Ranges ("0-2", "1-2 weeks") and decimals ("1.5 hours")
  are never prefixes.
* Numbered, every option labelled ("1. Rarely", ...): the prefixes are cleaned (``prefix_cleaned``).
* Numbered, only bare numbers: kept as bare numbers (numbered from the first one, so "0".."10" keeps 0..10) when the
  question explains both ends (e.g. "where 0 means ... and 10 means ...", "with 1 being ..."), else dropped
  (``bare_numbers_unexplained``). A list of bare numbers or numeric ranges ("0-2", "3-5") that is not numbered the
  same way follows the same rule.
* Numbered, some labels: when the first and last options carry labels ("1 - Not at all", "2", ..., "5 - Completely")
  the options become bare numbers and a sentence naming every labelled point is appended (``scale_converted``);
  otherwise the scale cannot be read and is dropped (``unconvertible_scale``).
* Not numbered: options whose number prefix matches their position are cleaned; a bare number among text options
  makes the list unreadable (``unconvertible_scale``).
* A list offering a non-substantive option is dropped (``non_substantive_option``): don't know, refused/refuse,
  decline, prefer not to say, no answer, no opinion, not sure/unsure, can't say/choose, not applicable, and the
  catch-all "Other" ("Other (please specify)", "Other answer", "Other:"). "Undecided", "It depends ..." and
  "Neither ..." are kept: they are positions a respondent can hold, like WVS's own middle options. With
  ``non_substantive="strip"`` (``filter.non_substantive=strip``) only those options are removed and the question is
  kept when two or more remain. On the paper's pool ``drop`` leaves Science & Technology with 94 of 1,000 questions
  (its lists mostly end in "9 - Don't know", "10 - Refused"); ``strip`` keeps 968.
* Fewer than two options (``too_few_options``) or the same option twice after cleaning (``duplicate_options``):
  dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BARE = re.compile(r"^(\d{1,2})$")
_LABELLED = re.compile(r"^(\d{1,2})\s*(?:\.(?!\d)|\)|:|[-–—](?=\s*[^\d\s]))\s*(\S.*?)$")
_PAREN = re.compile(r"^(\d{1,2})\s*\(\s*(.+?)\s*\)$")
_NUMERIC = re.compile(r"^\d+(?:\s*[-–—]\s*\d+)?$")
_NUMBERS = re.compile(r"\d+")

_NON_SUBSTANTIVE = re.compile(
    r"\b(?:don'?t know|do not know|refus\w*|declin\w*|prefer not|rather not (?:say|answer)|no answer|no opinion|"
    r"not sure|unsure|can'?t (?:say|choose|decide)|cannot (?:say|choose|decide)|not applicable|n/a)\b"
)
_OTHER = re.compile(r"^(?:other|something else)\b(?:\s+\w+)?\W*$|^(?:other|something else)\b.*\b(?:specify|write in)\b")
_END_CUE = (
    r"(?:\s*(?:=|:|\(|[-–—](?!\s*\d))|\s+(?:means?|meaning|being|is|indicates?|represents?|stands?\s+for|signif\w*|"
    r"corresponds?\s+to|refers?\s+to|for|as)\b)"
)

RULES = (
    "too_few_options",
    "non_substantive_option",
    "bare_numbers_unexplained",
    "unconvertible_scale",
    "duplicate_options",
)


@dataclass
class Formatted:
    """Outcome of the format rules for one question: ``dropped`` names the rule that removed it, else the cleaned
    text/options and which rewrites applied."""

    text: str
    options: list[str]
    first_option: int = 1
    dropped: str | None = None
    changes: list[str] = field(default_factory=list)


def parse_option(option: str) -> tuple[int | None, str | None]:
    """``(number, label)``: "3" → (3, None); "3. Often" / "3 - Often" / "3) Often" / "3 (Often)" → (3, "Often");
    anything else (incl. ranges "1-2" and "1.5 hours") → (None, option)."""
    text = option.strip()
    if m := _BARE.match(text):
        return int(m.group(1)), None
    if m := _PAREN.match(text):
        return int(m.group(1)), m.group(2).strip()
    if m := _LABELLED.match(text):
        return int(m.group(1)), m.group(2).strip()
    return None, text


def _norm(text: str) -> str:
    return " ".join(text.replace("’", "'").replace("‘", "'").lower().split())


def is_non_substantive(label: str) -> bool:
    """Don't know / refusal / catch-all "Other" options (see the module docstring for the exact list)."""
    text = _norm(label)
    return bool(_NON_SUBSTANTIVE.search(text) or _OTHER.search(text))


def explains_scale(question: str, low: int, high: int) -> bool:
    """Whether the question says what both ends of a ``low``..``high`` scale mean ("where 1 means ...", "with 10
    being ...", "1 = ...", "'not at all' (1)")."""
    text = _norm(question)

    def labelled(n: int) -> bool:
        num = rf"(?<![\d.]){n}(?![\d.])['\"]?"
        return bool(re.search(num + _END_CUE, text) or re.search(rf"\(\s*['\"]?{num}\s*\)", text))

    return labelled(low) and labelled(high)


def _start(numbers: list[int]) -> int | None:
    if numbers and numbers[0] in (0, 1) and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return numbers[0]
    return None


def scale_sentence(points: list[tuple[int, str]]) -> str:
    """ "On this scale, 1 means "Not at all" and 5 means "Completely"." for the labelled points of a scale."""
    parts = [f'{n} means "{label.rstrip(".")}"' for n, label in points]
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"On this scale, {joined}."


def _substantive(option: str) -> bool:
    label = parse_option(option)[1]
    return not (is_non_substantive(option) or (label is not None and is_non_substantive(label)))


def format_question(text: str, options: list[str], non_substantive: str = "drop") -> Formatted:
    """Apply the per-question rules (module docstring) to one question.

    ``non_substantive="strip"`` removes don't-know/refusal/"Other" options instead of dropping the question (the
    rest of the rules then see the remaining options, so "1 - ...", ..., "5 - ...", "9 - Don't know" still reads as
    a 1-5 scale).
    """
    if non_substantive not in ("drop", "strip"):
        raise ValueError(f"non_substantive={non_substantive!r}; choose drop or strip")
    options = [o.strip() for o in options]
    out = Formatted(text=text.strip(), options=options)
    if len(options) < 2:
        out.dropped = "too_few_options"
        return out
    keep = [o for o in options if _substantive(o)]
    if len(keep) != len(options):
        if non_substantive == "drop" or len(keep) < 2:
            out.dropped = "non_substantive_option"
            return out
        options = out.options = keep
        out.changes.append("non_substantive_stripped")
    parsed = [parse_option(o) for o in options]
    numbers = [n for n, _ in parsed]
    start = _start(numbers) if all(n is not None for n in numbers) else None  # type: ignore[arg-type]

    if start is not None:
        labelled = [(n, label) for n, label in parsed if label is not None]
        if len(labelled) == len(options):
            out.options = [label for _, label in parsed]  # type: ignore[misc]
            out.changes.append("prefix_cleaned")
        elif not labelled:
            if not explains_scale(text, numbers[0], numbers[-1]):  # type: ignore[arg-type]
                out.dropped = "bare_numbers_unexplained"
                return out
            out.options = [str(n) for n in numbers]
            out.first_option = start
        elif parsed[0][1] is not None and parsed[-1][1] is not None:
            out.options = [str(n) for n in numbers]
            out.first_option = start
            out.text = f"{out.text} {scale_sentence(labelled)}"  # type: ignore[arg-type]
            out.changes.append("scale_converted")
        else:
            out.dropped = "unconvertible_scale"
            return out
    elif all(_NUMERIC.match(o) for o in options):
        values = [int(x) for o in options for x in _NUMBERS.findall(o)]
        if not explains_scale(text, min(values), max(values)):
            out.dropped = "bare_numbers_unexplained"
            return out
    else:
        if any(label is None and n is not None for n, label in parsed):
            out.dropped = "unconvertible_scale"  # a bare number among text options
            return out
        cleaned = _clean_positional(parsed, options)
        if cleaned != options:
            out.options = cleaned
            out.changes.append("prefix_cleaned")

    if len({_norm(o) for o in out.options}) != len(out.options):
        out.dropped = "duplicate_options"
    return out


def _clean_positional(parsed: list[tuple[int | None, str | None]], options: list[str]) -> list[str]:
    """Strip number prefixes that match the option's position (from 0 or 1) in a partly numbered list."""
    for base in (1, 0):
        hits = [i for i, (n, label) in enumerate(parsed) if label is not None and n == base + i]
        if hits and all(parsed[i][0] is None or i in hits for i in range(len(parsed))):
            return [parsed[i][1] if i in hits else options[i] for i in range(len(options))]  # type: ignore[misc]
    return options
