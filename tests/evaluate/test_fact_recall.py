"""Fact recall, its interval and gap recovery, as eval computes them from answers and facts."""

import base64

import pytest

from alambic.evaluate import fact_recall, with_gaps
from alambic.evaluate.report import speed_plot_png
from alambic.facts import HANDOFF
from alambic.results import ModelScore
from alambic.store import Item


def question(key: str) -> Item:
    return Item(key, "synth-x", "synth", "qa", "ok", {"messages": []})


def test_recall_counts_only_questions_with_a_fact_from_the_documents() -> None:
    heldout = [question(k) for k in "abcd"]
    facts = {"a": "30 days", "b": "£12.50", "c": HANDOFF}  # d has none
    answers = ["Within 30 days.", "It is free.", "Ask a colleague.", "Whatever."]
    recall, low, high = fact_recall(heldout, answers, facts)
    assert recall == 0.5 and 0.0 <= low <= recall <= high <= 1.0
    assert fact_recall(heldout, answers, {"c": HANDOFF}) is None


def row(role: str, recall: float | None, checked: float | None = None) -> ModelScore:
    return ModelScore(
        role=role,
        label=role,
        fact_recall=recall,
        checked_fact_recall=checked,
        f1=0,
        cosine=0,
        heldout_loss=None,
        tokens_per_second=0,
        size="",
    )


def test_gap_recovery_is_the_share_of_the_chunks_gain_the_student_recovers() -> None:
    rows = [row("base", 0.1), row("student", 0.5), row("teacher", 0.2), row("teacher+chunk", 0.8)]
    with_gaps(rows)
    assert rows[1].gap_recovery == pytest.approx(0.5) and rows[0].gap_recovery == pytest.approx(-1 / 6)
    assert rows[2].gap_recovery is None and rows[3].gap_recovery is None
    flat = [row("student", 0.5), row("teacher", 0.6), row("teacher+chunk", 0.6)]
    with_gaps(flat)
    assert flat[0].gap_recovery is None


def test_hand_checked_gap_recovery_stands_where_the_held_out_one_has_no_gap() -> None:
    rows = [row("student", 0.0, 0.25), row("teacher", 0.0, 0.05), row("teacher+chunk", 0.0, 0.45)]
    with_gaps(rows)
    assert rows[0].gap_recovery is None
    assert rows[0].checked_gap_recovery == pytest.approx(0.5) and rows[2].checked_gap_recovery is None


def test_the_speed_plot_needs_two_models_with_a_speed_and_a_fact_recall() -> None:
    rows = [row("student", 0.5), row("teacher", None)]
    rows[0].tokens_per_second = 40.0
    assert speed_plot_png(rows) is None
    rows[1].fact_recall, rows[1].tokens_per_second = 0.25, 20.0
    assert base64.b64decode(speed_plot_png(rows) or "").startswith(b"\x89PNG")
