"""Questions and tasks as teachers really write them: numbered, bulleted, quoted, bold, after a lead-in line."""

import pytest

from alambic.guard.refusal import is_refusal
from alambic.synth.curation import answer_problem, clean_item, parse_lines

# Each of these was accepted as a training question by the demo before (issue 18).
SEEN_IN_THE_DEMO = {
    "3. How much is the espresso bar?": "How much is the espresso bar?",
    "1. How do I ship to the UK, Europe?": "How do I ship to the UK, Europe?",
    'One possible question that can be asked is: "How do you store your coffee?': "How do you store your coffee?",
}


@pytest.mark.parametrize("written", SEEN_IN_THE_DEMO)
def test_the_demos_accepted_questions_come_out_clean(written: str) -> None:
    assert clean_item(written) == SEEN_IN_THE_DEMO[written]
    assert parse_lines(written, limit=3, questions_only=True) == [SEEN_IN_THE_DEMO[written]]


def test_an_answer_that_restates_its_question_is_rejected_whatever_it_adds() -> None:
    question = "What's a fictional question?"
    assert answer_problem(question, "A fictional question: What's a fictional question?", "stop", 3) == (
        "echoes_question"
    )
    assert answer_problem(question, "What's a fictional question? That is a good question, really.", "stop", 3) == (
        "echoes_question"
    )
    ship = "Do you ship to Egypt?"
    assert answer_problem(ship, "Yes, we do ship to Egypt, in six to ten working days.", "stop", 3) is None
    assert answer_problem(ship, "Do you ship to Egypt? Yes, in six to ten days.", "stop", 3) == "echoes_question"
    # A question of two words can appear in a real answer; only an answer that is nothing else echoes it.
    assert answer_problem("Gift cards?", "Yes, gift cards from 10 to 100 euros.", "stop", 3) is None


LIST_FORMATS = {
    "numbered": "1. When do you roast?\n2) Do you ship to Egypt?\n(3) Is the shop open on Sunday?",
    "bulleted": "- When do you roast?\n* Do you ship to Egypt?\n• Is the shop open on Sunday?",
    "quoted": '"When do you roast?"\n“Do you ship to Egypt?”\n1. "Is the shop open on Sunday?"',
    "bold and labelled": "**1. When do you roast?**\nQ2: Do you ship to Egypt?\n"
    "Question 3: Is the shop open on Sunday?",
    "with a lead-in line": "Here are some questions:\n\n1. When do you roast?\n2. Do you ship to Egypt?\n"
    "3. Is the shop open on Sunday?",
    "lead-in on each item": 'Sure! Here is a question: When do you roast?\nExample question: "Do you ship to Egypt?"\n'
    "One possible question is: Is the shop open on Sunday?",
}


@pytest.mark.parametrize("written", LIST_FORMATS)
def test_every_list_format_gives_the_bare_questions(written: str) -> None:
    expected = ["When do you roast?", "Do you ship to Egypt?", "Is the shop open on Sunday?"]
    assert parse_lines(LIST_FORMATS[written], limit=5, questions_only=True) == expected


def test_tasks_skip_the_line_that_introduces_them() -> None:
    raw = "Here are three new tasks:\n1. Suggest a coffee for a French press.\n2. Write a note for a new customer."
    assert parse_lines(raw, limit=5, questions_only=False) == [
        "Suggest a coffee for a French press.",
        "Write a note for a new customer.",
    ]


def test_arabic_numbered_and_quoted_questions() -> None:
    raw = "١. هل تشحنون إلى مصر؟\n2. «كم سعر القهوة اليمنية؟»\nسؤال 3: متى تحمصون القهوة؟"
    assert parse_lines(raw, limit=5, questions_only=True) == [
        "هل تشحنون إلى مصر؟",
        "كم سعر القهوة اليمنية؟",
        "متى تحمصون القهوة؟",
    ]


@pytest.mark.parametrize(
    "question",
    [
        "Do you sell 2.5 kg bags?",
        'Do you stock "Yemen Mocha" beans?',
        "What are your opening hours: summer or winter?",
        "Shipping: how long does it take?",
        "24 hours after I order, can I still cancel?",
    ],
)
def test_a_real_question_is_left_as_it_is(question: str) -> None:
    assert clean_item(question) == question


@pytest.mark.parametrize(
    "leak",
    [
        "What is a factual question that might be asked about this passage?",
        "What's a fictional question?",
        "Does the reference text say when you roast?",
    ],
)
def test_a_question_about_the_task_is_not_a_customer_question(leak: str) -> None:
    assert parse_lines(leak, limit=3, questions_only=True) == []


def test_an_evolved_question_is_one_question_or_none() -> None:
    """What the evolve recipe keeps: exactly one question line, however the teacher wraps it (seen in the demo)."""
    wrapped = 'Here\'s the new question: "Can I change my order after the roast day?"'
    assert parse_lines(wrapped, limit=2, questions_only=True) == ["Can I change my order after the roast day?"]
    restated = "How do you pick the beans?\n\nThe original question: How do you pick the beans?\n\nThe answer is yes."
    assert parse_lines(restated, limit=2, questions_only=True) == ["How do you pick the beans?"]
    options = 'You can choose from the following options:\n* "How can I help them?"\n* "What can I do?"'
    assert len(parse_lines(options, limit=2, questions_only=True)) == 2  # more than one: the recipe rejects it


def test_parse_lines_strips_markers_and_keeps_arabic_questions() -> None:
    raw = "Here are two questions:\n1. When do you roast?\n- هل تشحنون إلى مصر؟\nQuestion 3: when do you roast?\nA: no"
    assert parse_lines(raw, limit=5, questions_only=True) == ["When do you roast?", "هل تشحنون إلى مصر؟"]
    assert parse_lines(raw, limit=1, questions_only=True) == ["When do you roast?"]


def test_answer_problems_have_reasons() -> None:
    q = "When do you roast?"
    assert answer_problem(q, "", "stop", 3) == "empty_answer"
    assert answer_problem(q, "<|im_start|>assistant hi there you", "stop", 3) == "malformed_answer"
    assert answer_problem(q, "We roast every Tuesday and", "length", 3) == "truncated_answer"
    assert answer_problem(q, "Tuesdays.", "stop", 3) == "too_short"
    assert answer_problem(q, "When do you roast?", "stop", 1) == "echoes_question"
    assert answer_problem(q, "We roast every Tuesday and Thursday.", "stop", 3) is None


def test_refusals_are_told_from_handoffs_in_several_languages() -> None:
    assert is_refusal("I'm sorry, but I can't help with that request.")
    assert is_refusal("I cannot provide instructions for that.")
    assert is_refusal("عذرًا، لا أستطيع المساعدة في ذلك.")
    assert is_refusal("Je ne peux pas vous aider avec cela.")
    assert not is_refusal("I don't know that; I can pass your question to a colleague.")
    assert not is_refusal("We roast on Mondays and Thursdays.")
    assert not is_refusal("لا نعرف ذلك، سأحول سؤالك إلى زميل.")
    assert is_refusal("Sorry, that's not something I can help with.")


def test_the_businesss_own_refusal_message_is_a_refusal_whatever_its_words() -> None:
    message = "Our baristas only talk coffee! Ask us about beans, brewing or your order."
    assert is_refusal("Our baristas only talk coffee!", message)
    assert not is_refusal("Our baristas roast on Tuesdays.", message)
    assert not is_refusal("Our baristas only talk coffee!")  # without the message, no pattern says so
