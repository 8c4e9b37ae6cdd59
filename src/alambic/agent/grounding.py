"""Whether an answer's figures come from what the agent read. A price, a date, an hour, a phone number or an order
number that none of the documents, tool results or the conversation gives is the costliest thing a support agent
can make up, and the one a check can catch without a model: every run of digits in the answer must occur in what
the model was given. Digits are compared in ASCII, so Arabic-Indic ones match their Latin twins."""

from __future__ import annotations

import re
from collections.abc import Iterable

DIGITS = re.compile(r"\d+")


def digit_runs(text: str) -> set[str]:
    """Every run of digits in the text, in ASCII digits, without leading zeros ("09:00" gives "9" and "0")."""
    return {str(int(run)) for run in DIGITS.findall(text)}


def unsupported_figures(answer: str, sources: Iterable[str]) -> list[str]:
    """The digit runs of the answer that no source holds, in the order they first appear."""
    given = set().union(*(digit_runs(source) for source in sources))
    made_up = [str(int(run)) for run in DIGITS.findall(answer) if str(int(run)) not in given]
    return list(dict.fromkeys(made_up))
