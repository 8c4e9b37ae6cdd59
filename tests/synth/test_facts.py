"""Answer facts: a span of the chunk or a hand-off, checked against the chunk in any script, paid for once."""

import pytest

from alambic.facts import HANDOFF, checked_fact
from alambic.text import contains

CHUNK = (
    "Store and return\n"
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
        ('The shortest phrase that answers it is "within 30 days".', "within 30 days", None),
        ("The answer is: “£12.50 for 250 g”, as the price list says", "£12.50 for 250 g", None),
        ('It says "within 60 days".\nwithin 30 days', "within 30 days", None),  # a later line that is in the chunk
        ("within 60 days", None, "fact_not_in_chunk"),
        ("30 day", None, "fact_not_in_chunk"),  # whole words only
        ("  \n", None, "no_fact"),
        ("Returns > unopened bags", None, "fact_not_in_chunk"),  # a heading path is no fact
        ("Store and return", None, "fact_not_in_chunk"),  # nor is the chunk's heading line
        ("can be returned", None, "fact_in_question"),  # nothing the question does not already say
        ("for a", None, "fact_in_question"),  # function words only
    ],
)
def test_a_fact_is_kept_only_when_the_chunk_holds_it(raw: str, fact: str | None, reason: str | None) -> None:
    assert checked_fact(raw, CHUNK, "Can opened bags be returned?") == (fact, reason)


def test_a_whole_paragraph_is_no_fact() -> None:
    long = " ".join(f"word{n}" for n in range(31))
    assert checked_fact(long, f"Intro. {long}. End.", "What?") == (None, "fact_too_long")


def test_an_answer_states_a_fact_in_its_own_words_around_it() -> None:
    assert contains("Sure! You can return them within 30 days.", "within 30 days")
    assert contains("It costs £12.50 for 250 g", "£12.50 for 250 g")
    assert contains("يستغرق الشحن سبعة ايام عمل تقريبا", "سبعةِ أيامِ عمل")  # alef and diacritics folded
    assert not contains("within 3 days", "within 30 days")
    assert not contains("anything", "")
