"""Progress of question generation in model replies, the unit its time goes into.

Counting accepted questions left the bar at ``0/13`` for minutes while every reply was bad JSON, and its ETA (from the
few questions accepted early) far off. Here the bar advances by one per reply; its total is the most replies still
possible (every open slot may use ``max_retries + 1`` attempts) and shrinks as slots resolve early, so the total and
the ETA are upper bounds from the first wave on and exact at the end. The postfix counts resolved slots.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


class ReplyBar:
    def __init__(self, slots: int, max_attempts: int, resolved: int = 0, desc: str = "questions") -> None:
        self.slots = slots
        self.max_attempts = max_attempts
        self.resolved = resolved
        self.bar: Any = tqdm(total=(slots - resolved) * max_attempts, desc=desc, unit="reply")
        self._postfix()

    def reply(self, attempts: int, done: bool) -> None:
        """One reply; ``done`` when it resolved its slot after ``attempts`` attempts (accepted, or out of retries)."""
        if done and attempts < self.max_attempts:
            self.bar.total -= self.max_attempts - attempts
        self.bar.update(1)

    def update(self, slots: int) -> None:
        """``slots`` slots resolved (counted in the postfix; the bar itself advances per reply)."""
        self.resolved += slots
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"slots {self.resolved}/{self.slots}", refresh=False)

    def close(self) -> None:
        self.bar.close()
