"""Rule checks on one item: length bounds, the language of the answer against the question's, refusals."""

from __future__ import annotations

from alambic.config import CurateSection
from alambic.guard.refusal import is_refusal
from alambic.language import same_language

# The recipes reject refusals as the teacher writes them; only imported conversations come unchecked.
UNCHECKED_FOR_REFUSALS = frozenset({"import"})


def item_problem(kind: str, user_turns: list[str], answers: list[str], settings: CurateSection) -> str | None:
    """Why an item fails the rule checks, or None."""
    for answer in answers:
        if len(answer.strip()) < settings.min_chars:
            return "too_short"
        if len(answer) > settings.max_chars:
            return "too_long"
        if kind in UNCHECKED_FOR_REFUSALS and is_refusal(answer):
            return "refusal"
    if settings.language_check and user_turns and answers:  # noqa: SIM102
        if same_language(" ".join(user_turns), " ".join(answers)) is False:
            return "wrong_language"
    return None
