"""Answer facts: a span of the chunk or a hand-off, checked against the chunk in any script, paid for once."""

import pytest

from alambic.facts import HANDOFF, contains
from alambic.synth.facts import checked_fact

CHUNK = (
    "Returns: unopened bags can be returned within 30 days for a full refund. "
    "Our espresso blend costs £12.50 for 250 g.\n"
    "الشحن إلى مصر يستغرق سبعة أيام عمل."
)


@pytest.mark.parametrize(
    ("raw", "fact", "reason"),
    [
        ("within 30 days", "within 30 days", None),
        ('"£12.50 for 250 g."', "£12.50 for 250 g", None),
        ("Answer: within 30 days\nbecause the policy says so", "within 30 days", None),
        ("سبعةِ أيامِ عمل", "سبعةِ أيامِ عمل", None),  # diacritics the chunk lacks: the same words
        ("NONE", HANDOFF, None),
        ("None.", HANDOFF, None),
        ("لا يوجد", HANDOFF, None),
        ("within 60 days", None, "fact_not_in_chunk"),
        ("30 day", None, "fact_not_in_chunk"),  # whole words only
        ("  \n", None, "no_fact"),
        (" ".join(["word"] * 31), None, "fact_too_long"),
    ],
)
def test_a_fact_is_kept_only_when_the_chunk_holds_it(raw: str, fact: str | None, reason: str | None) -> None:
    assert checked_fact(raw, CHUNK) == (fact, reason)


def test_an_answer_states_a_fact_in_its_own_words_around_it() -> None:
    assert contains("Sure! You can return them within 30 days.", "within 30 days")
    assert contains("It costs £12.50 for 250 g", "£12.50 for 250 g")
    assert contains("يستغرق الشحن سبعة ايام عمل تقريبا", "سبعةِ أيامِ عمل")  # alef and diacritics folded
    assert not contains("within 3 days", "within 30 days")
    assert not contains("anything", "")
