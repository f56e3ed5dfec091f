"""The question record every stage shares: WVS survey questions and generated ones alike.

A question's options are numbered consecutively from ``first_option`` (0 or 1); an answer is one of those numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from culturespa.errors import fail


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    options: tuple[str, ...]
    first_option: int = 1
    topic: str | None = None
    source: str = "wvs"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def numbers(self) -> list[int]:
        """Valid answer numbers, in option order."""
        return list(range(self.first_option, self.first_option + len(self.options)))

    @property
    def n_options(self) -> int:
        return len(self.options)

    def option_text(self, number: int) -> str:
        return self.options[number - self.first_option]

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["options"] = list(self.options)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str = "question") -> Question:
        """Build from a JSONL record; a missing or ill-typed field is reported with ``where`` (file:line)."""
        if not isinstance(record, dict):
            raise fail(where, f"expected a JSON object, got {type(record).__name__}")
        for key in ("id", "text", "options"):
            if key not in record:
                raise fail(where, f"missing field {key!r}")
        options = record["options"]
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise fail(where, f"question {record['id']}: 'options' must be a non-empty list of strings")
        first = record.get("first_option", 1)
        if first not in (0, 1):
            raise fail(where, f"question {record['id']}: 'first_option' must be 0 or 1, got {first!r}")
        return cls(
            id=str(record["id"]),
            text=str(record["text"]),
            options=tuple(options),
            first_option=int(first),
            topic=record.get("topic"),
            source=str(record.get("source", "generated")),
            meta=dict(record.get("meta") or {}),
        )
