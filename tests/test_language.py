"""Language identification on the support-desk example's own sentences and short customer questions."""

import pytest

from alambic.language import MIN_CONFIDENCE, language_confidences, language_of, same_language

from .conftest import EXAMPLE

ENGLISH_QUESTION = "Can I return an opened bag of coffee?"
ARABIC_QUESTION = "كم سعر مطحنة القهوة اليدوية؟"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("We roast every Tuesday and Thursday morning.", "en"),
        ("Every bag shows its roast date on the back label.", "en"),
        ("نحمّص القهوة يومي الثلاثاء والخميس من كل أسبوع، ويُكتب تاريخ التحميص على ظهر كل كيس.", "ar"),
        ("يمكن إرجاع القهوة غير المفتوحة والأدوات غير المستعملة خلال 30 يوماً من الاستلام.", "ar"),
        ("Oui, nous livrons en Belgique en trois à cinq jours ouvrés.", "fr"),
        ("Vous pouvez suspendre ou annuler votre abonnement à tout moment.", "fr"),
        ("Où est ma commande ?", "fr"),
        ("¿Dónde está mi pedido?", "es"),
        ("Wo ist meine Bestellung?", "de"),
        ("Where is my order?", "en"),
        ("هل القهوة طازجة؟", "ar"),
    ],
)
def test_real_sentences_and_short_questions(text: str, code: str) -> None:
    assert language_of(text) == code


def test_the_example_documents() -> None:
    docs = EXAMPLE / "docs"
    assert language_of((docs / "faq.md").read_text(encoding="utf-8")) == "en"
    assert language_of((docs / "arabic-customers.md").read_text(encoding="utf-8")) == "ar"


def test_a_french_answer_to_an_english_question_is_another_language() -> None:
    answer = "Non, le café ouvert ne peut pas être retourné, mais nous vous enverrons un autre café gratuitement."
    assert same_language(ENGLISH_QUESTION, answer) is False
    english = "No, opened coffee cannot be returned, but we will send you another coffee free of charge."
    assert same_language(ENGLISH_QUESTION, english) is True


def test_an_arabic_answer_naming_english_products_is_arabic() -> None:
    answer = "نعم، مطحنة Comandante C40 متوفرة بسعر 235 جنيهاً إسترلينياً، ويمكن استخدامها مع AeroPress Original."
    assert language_of(answer) == "ar"
    assert same_language(ARABIC_QUESTION, answer) is True
    assert same_language(ENGLISH_QUESTION, answer) is False
    assert language_of("سعر Harbour Blend هو £9.50 لكيس 250 g.") == "ar"


def test_a_terse_answer_in_another_script_is_still_told_apart() -> None:
    assert language_of("We open at nine.") is None  # too short to be sure it is English...
    assert same_language("متى تفتحون؟", "We open at nine.") is False  # ...but surely not Arabic
    assert same_language("We open at nine.", "نفتح في التاسعة صباحاً من الاثنين إلى الجمعة.") is False
    assert same_language("Refund please", "Merci") is None  # neither is determined


def test_arabic_dialects_count_as_arabic() -> None:
    assert language_of("عايز أرجع الطلب بتاعي") == "ar"  # Egyptian
    assert language_of("شكرا جزيلا") == "ar"  # the model says Moroccan Arabic first


@pytest.mark.parametrize("text", ["", "   \n", "12345", "0131 555 0142", "£9.50", "?!", "18 g / 38 g", "QL-10234"])
def test_no_language_without_words(text: str) -> None:
    assert language_of(text) is None
    assert same_language(text, "We roast every Tuesday and Thursday morning.") is None
    assert same_language("We roast every Tuesday and Thursday morning.", text) is None


def test_confidences_are_probabilities() -> None:
    scores = language_confidences("Do you ship to Ireland? We would like two bags of the Harbour Blend.")
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-3)
    assert max(scores, key=scores.__getitem__) == "en" and scores["en"] >= MIN_CONFIDENCE
    assert language_confidences("2016") == {}
