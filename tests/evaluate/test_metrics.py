import pytest

from alambic.evaluate.metrics import token_f1
from alambic.models.embedded import minilm_dir
from alambic.models.embeddings import Embedder


def test_token_f1() -> None:
    assert token_f1("We roast on Tuesday.", "we roast on tuesday") == 1.0
    assert token_f1("", "anything") == 0.0
    assert token_f1("roast Tuesday", "We roast on Tuesday") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("nothing shared", "We roast on Tuesday") == 0.0


def test_token_f1_ignores_arabic_diacritics() -> None:
    assert token_f1("نُحَمِّصُ القهوة يوم الثلاثاء", "نحمص القهوة يوم الثلاثاء") == 1.0


def test_embedder_cosine_ranks_related_answers_higher() -> None:
    embedder = Embedder(minilm_dir())
    reference = "We ship to Egypt in 6 to 10 working days."
    same, related, unrelated = embedder.cosine(
        [reference, "Delivery to Egypt takes about a week or two.", "The espresso bar has a lower counter."],
        [reference] * 3,
    )
    assert same == pytest.approx(1.0, abs=1e-4)
    assert related > unrelated + 0.2
