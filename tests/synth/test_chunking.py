from alambic.guard.refusal import is_refusal
from alambic.synth.chunking import chunk_document
from alambic.synth.curation import answer_problem, parse_lines

ARABIC = """# معلومات لعملائنا

## هل تشحنون إلى الدول العربية؟
نعم، نشحن إلى الإمارات العربية المتحدة والمملكة العربية السعودية والأردن ومصر.

تكلفة الشحن 14 جنيهاً إسترلينياً، ويصل الطلب خلال 6 إلى 10 أيام عمل.
"""


def test_arabic_text_survives_chunking_exactly() -> None:
    chunks = chunk_document("ar.md", ARABIC, max_chars=900)
    assert len(chunks) == 1
    text = chunks[0].text
    assert text.startswith("معلومات لعملائنا > هل تشحنون إلى الدول العربية؟")
    for paragraph in ARABIC.split("\n\n")[1:]:
        body = paragraph.split("\n", 1)[-1].strip()
        assert body in text


def test_long_sections_are_split_at_paragraphs_and_sentences() -> None:
    sentence = "Our coffee is roasted on Tuesdays and Thursdays in small batches. "
    text = "# Roasting\n\n" + sentence * 40 + "\n\nSecond paragraph about decaf.\n"
    chunks = chunk_document("doc.md", text, max_chars=400)
    assert len(chunks) > 3
    assert all(len(c.text) <= 400 + len("Roasting\n\n") for c in chunks)
    assert all(c.text.startswith("Roasting\n\n") for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    joined = " ".join(c.text.replace("Roasting\n\n", "") for c in chunks)
    assert joined.count("roasted on Tuesdays") == 40
    assert "Second paragraph about decaf." in joined


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
