"""Checks an answer must pass before the agent gives it: its figures come from what it read, it tells the customer
what the tool it called returned, it takes up the question, and what it adds to the question the passages say.

Figures: a price, a date, an hour, a phone number or an order
number that none of the documents, tool results or the conversation gives is the costliest thing a support agent
can make up, and the one a check can catch without a model: every figure in the answer must occur in what the
model was given. Figures are compared whole ("£4.95" is not supported by "£3.95" and "£40"), in ASCII digits (so
Arabic-Indic ones match their Latin twins), without what does not change a value: leading zeros, zero minutes or
decimals, thousands separators ("09:00" is "9", "£12.50" is "12.5", "1,200" is "1200")."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from alambic.agent.retrieval import index_words

if TYPE_CHECKING:
    from alambic.models.embeddings import Embedder

FIGURE = re.compile(r"\d+(?:[.:]\d+)*")
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def figures(text: str) -> list[str]:
    """The figures of a text in their canonical form, in order."""
    return [_canonical(figure) for figure in FIGURE.findall(THOUSANDS.sub("", text))]


def _canonical(figure: str) -> str:
    whole, *rest = re.split(r"([.:])", figure)
    parts = [str(int(whole))]
    for separator, digits in zip(rest[::2], rest[1::2], strict=True):
        digits = str(int(digits)) if separator == ":" else "".join(str(int(d)) for d in digits).rstrip("0")
        if digits.strip("0"):
            parts.append(f"{separator}{digits}")
    return "".join(parts)


def unsupported_figures(answer: str, sources: Iterable[str]) -> list[str]:
    """The figures of the answer that no source holds, each once, in the order they first appear."""
    given = {figure for source in sources for figure in figures(source)}
    return list(dict.fromkeys(figure for figure in figures(answer) if figure not in given))


def relevance(embedder: Embedder, questions: list[str], answers: list[str]) -> list[float]:
    """The cosine of each question and its answer in meaning: a reply that does not take up the question (a
    greeting, a request to repeat it, a passage about something else) scores low, whatever it contains."""
    return (embedder.embed(questions) * embedder.embed(answers)).sum(-1).tolist()


def support(answer: str, question: str, passages: list[str], rarity: Callable[[set[str]], dict[str, float]]) -> float:
    """How much of what the answer adds to the question the passages say, each word weighed by its rarity in the
    documents (`rarity`: the retriever's): an answer taken from a passage scores near 1, a greeting, a request to
    repeat the question or an answer from elsewhere near 0, whatever common words they share. 1.0 when the answer
    adds no word to the question."""
    added = set(index_words(answer)) - set(index_words(question))
    if not added:
        return 1.0
    said = {word for passage in passages for word in index_words(passage)}
    weights = rarity(added)
    return sum(weights[word] for word in added if word in said) / sum(weights.values())


def uses_results(answer: str, question: str, results: list[Any]) -> bool:
    """Whether the answer states something the tools returned that the customer did not write: a status, a
    tracking number, a date. True when they returned nothing new (an empty lookup) or no results were given."""
    new = [value for value in _scalars(results) if not _states(question, value)]
    return not new or any(_states(answer, value) for value in new)


def _scalars(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in _scalars(item)]
    if isinstance(value, list):
        return [text for item in value for text in _scalars(item)]
    if value is None or isinstance(value, bool):
        return []
    return [str(value)]


def _states(text: str, value: str) -> bool:
    if figures(value) and not re.search(r"[^\W\d_]", value):  # a number, an hour, a date: compared as figures
        return set(figures(value)) <= set(figures(text))
    words = " ".join(value.replace("_", " ").split()).casefold()
    return bool(words) and words in " ".join(text.split()).casefold()
