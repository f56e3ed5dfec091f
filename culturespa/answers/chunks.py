"""Fixed resume chunks: the unit in which questions go to the engine, are resumed and are split into shards.

Questions go to the engine ``answers.resume_chunk`` at a time by position within each run (sample), and an unfinished
chunk is redone whole, so every answer is computed in the same batch as in an uninterrupted run: with greedy or
logprob decoding a resumed (or sharded) file is bitwise identical (on CPU a prompt's logits change in the last bits
with its batch partners, so merely skipping done prompts would not be), as long as the engine settings are unchanged.
"""

from __future__ import annotations

from typing import Any

from culturespa.errors import CultureSPAError


def resume_chunk(chunk: Any) -> int:
    """``answers.resume_chunk`` as configured, checked: how many questions go to the engine together (answers stage
    and evaluation)."""
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise CultureSPAError(f"answers.resume_chunk={chunk!r} must be a positive integer")
    return chunk


def resume_chunks(order: list[str], chunk: int, per_run: int | None = None) -> list[list[str]]:
    """The fixed resume chunks of an answers file: ``chunk`` keys at a time by position within each run (sample) of
    ``per_run`` keys, run-major, so run 0 is batched exactly as when one sample is asked for."""
    per_run = per_run or len(order) or 1
    return [
        order[start : min(start + chunk, run + per_run)]
        for run in range(0, len(order), per_run)
        for start in range(run, min(run + per_run, len(order)), chunk)
    ]
