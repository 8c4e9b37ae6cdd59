"""Curation's fact check: a training answer must state its question's checked fact."""

from alambic.curate import fact_missing
from alambic.facts import HANDOFF


def test_an_answer_without_its_fact_is_missing_it() -> None:
    assert fact_missing("within 30 days", ["You can return unopened bags within 30 days."]) is False
    assert fact_missing("within 30 days", ["You can return them any time, just ask us."]) is True
    assert fact_missing("£12.50", ["Hello", "It is £12.50."]) is False  # the last answer is the one checked


def test_items_without_a_span_fact_are_not_checked() -> None:
    assert fact_missing(None, ["Anything at all."]) is False
    assert fact_missing(HANDOFF, ["I don't know; let me pass you to a colleague."]) is False
    assert fact_missing("within 30 days", []) is False
