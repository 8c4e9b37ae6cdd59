"""The recipes a project mixes, and the loop that fills each one's count."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

from alambic.synth.recipes.base import Recipe
from alambic.synth.recipes.dialogue import Dialogue
from alambic.synth.recipes.qa import EvolInstruct, GroundedQA, SelfInstruct
from alambic.synth.recipes.safety import Safety
from alambic.synth.recipes.voice import PersonaVoice

__all__ = ["Dialogue", "EvolInstruct", "Fill", "GroundedQA", "PersonaVoice", "Recipe", "Safety", "SelfInstruct"]


GROUP_BUDGET_FACTOR = 3  # a recipe that accepts under a third of its items gives up rather than burn the budget


def recipe_targets(weights: dict[str, float], total: int) -> dict[str, int]:
    """Split `total` items over recipes by weight (largest remainders, so the counts add up)."""
    active = {name: weight for name, weight in weights.items() if weight > 0}
    scale = total / sum(active.values())
    exact = {name: weight * scale for name, weight in active.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: (counts[n] - exact[n], n))[: total - sum(counts.values())]:
        counts[name] += 1
    return {name: count for name, count in counts.items() if count > 0}


@dataclass
class Fill:
    """A recipe's progress towards its target: groups are issued in order, 0, 1, 2, ..."""

    recipe: Recipe
    target: int
    issued: int = 0
    finished: int = 0
    accepted: int = 0
    in_flight: int = 0

    def expected_per_group(self) -> float:
        observed = self.accepted / self.finished if self.finished else self.recipe.group_size
        return max(observed, 0.1)

    def budget(self) -> int:
        """Groups this recipe may use: its inputs' limit, and at most about three times what the target needs."""
        needed = math.ceil(self.target / max(1, self.recipe.group_size))
        return min(self.recipe.max_groups(), GROUP_BUDGET_FACTOR * needed + 1)

    def wants_more(self) -> bool:
        if self.issued >= self.budget():
            return False
        return self.accepted + self.in_flight * self.expected_per_group() < self.target


async def fill(fills: list[Fill], workers: int, on_group: Callable[[Fill, int], None]) -> None:
    """Run groups until every recipe has its target of accepted items or has used up its inputs.

    A new group starts only while the groups in flight are not expected to reach the target, so a
    high concurrency does not overshoot by many groups.
    """
    changed = asyncio.Condition()

    def pick() -> Fill | None:
        wanting = [f for f in fills if f.wants_more()]
        return min(wanting, key=lambda f: f.accepted / f.target) if wanting else None

    async def worker() -> None:
        while True:
            async with changed:
                while (chosen := pick()) is None and any(f.in_flight for f in fills):
                    await changed.wait()
                if chosen is None:
                    return
                index = chosen.issued
                chosen.issued += 1
                chosen.in_flight += 1
            accepted = 0
            try:
                accepted = await chosen.recipe.run_group(index)
            finally:
                async with changed:
                    chosen.in_flight -= 1
                    chosen.finished += 1
                    chosen.accepted += accepted
                    on_group(chosen, accepted)
                    changed.notify_all()

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
