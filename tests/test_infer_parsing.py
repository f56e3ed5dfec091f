"""Answer parsing: the first integer in a reply (the paper) or the first one that is a valid option number (ours)."""

from __future__ import annotations

import pytest

from culturespa.infer.parsing import is_option_list, parse_answer

ONE_TO_FOUR = [1, 2, 3, 4]
ZERO_TO_TEN = list(range(0, 11))
ONE_TO_TEN = list(range(1, 11))


@pytest.mark.parametrize(
    ("text", "numbers", "expected"),
    [
        ("2", ONE_TO_FOUR, 2),
        ("I would choose option 3. Rather important", ONE_TO_FOUR, 3),
        ("1. Very important\n2. Rather important", ONE_TO_FOUR, 1),
        ("0", ZERO_TO_TEN, 0),  # 0-based scale
        ("My answer: 0 (never justifiable)", ZERO_TO_TEN, 0),
        ("0", ONE_TO_FOUR, None),  # 0 is not an option of a 1-based question
        ("10", ONE_TO_TEN, 10),  # multi-digit, never read as 1
        ("10. Completely", ZERO_TO_TEN, 10),
        ("10", ONE_TO_FOUR, None),  # 10 is out of range and is not split into 1 and 0
        ("On a scale of 7 I pick 4", ONE_TO_FOUR, 4),  # out-of-range 7 skipped, the first valid one taken
        ("12 then 3", ONE_TO_TEN, 3),
        ("Very important", ONE_TO_FOUR, None),  # no number at all
        ("", ONE_TO_FOUR, None),
        ("option two", ONE_TO_FOUR, None),
        ("answer:4", ONE_TO_FOUR, 4),
    ],
)
def test_parse_answer_first_valid(text: str, numbers: list[int], expected: int | None) -> None:
    assert parse_answer(text, numbers, rule="first_valid") == expected


@pytest.mark.parametrize(
    ("text", "numbers", "expected"),
    [
        ("2", ONE_TO_FOUR, 2),
        ("I would choose option 3. Rather important", ONE_TO_FOUR, 3),
        ("1. Very important\n2. Rather important", ONE_TO_FOUR, 1),  # an echoed option list reads as option 1
        ("On a scale of 7 I pick 4", ONE_TO_FOUR, None),  # the paper reads 7: not an option, so invalid
        ("12 then 3", ONE_TO_TEN, None),  # the paper reads 12: above its range, invalid
        ("10", ONE_TO_TEN, 10),
        ("0", ONE_TO_FOUR, None),
        ("Very important", ONE_TO_FOUR, None),
    ],
)
def test_parse_answer_first_integer_is_the_default(text: str, numbers: list[int], expected: int | None) -> None:
    assert parse_answer(text, numbers) == expected == parse_answer(text, numbers, rule="first_integer")


def test_parse_rule_is_checked() -> None:
    with pytest.raises(ValueError):
        parse_answer("1", ONE_TO_FOUR, rule="last")


@pytest.mark.parametrize(
    ("text", "numbers", "listed"),
    [
        ("1. Strongly agree\n2. Somewhat agree\n3. Neither agree", [1, 2, 3, 4, 5], True),  # echoes the options
        ("  1) Yes\n  2) No", [1, 2], True),
        ("Option 0: never\nOption 1: sometimes", [0, 1, 2], True),  # 0-based numbering
        ("3. Neither agree nor disagree", [1, 2, 3, 4, 5], False),  # one numbered choice
        ("I choose 2.\n3 people agree", [1, 2, 3], False),  # no enumeration
        ("1. Yes\n3. Maybe", [1, 2, 3], False),  # not consecutive
        ("9. Nine\n10. Ten", [1, 2, 3, 4], False),  # not valid options
    ],
)
def test_option_lists_are_detected(text: str, numbers: list[int], listed: bool) -> None:
    assert is_option_list(text, numbers) is listed
    assert parse_answer(text, numbers, reject_option_lists=True) == (None if listed else parse_answer(text, numbers))


def test_settings_know_the_parse_rules() -> None:
    """``decoding.parse`` is checked in settings.py (one home for decoding values) against the rules parsing.py has."""
    import dataclasses

    from culturespa.infer.parsing import PARSE_RULES
    from culturespa.settings import DecodingSettings, rule_of

    rule = rule_of(next(f for f in dataclasses.fields(DecodingSettings) if f.name == "parse"))
    assert rule is not None and tuple(rule.choices) == PARSE_RULES  # type: ignore[union-attr]
