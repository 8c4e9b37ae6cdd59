"""Hybrid retrieval over a project's documents: English and Arabic found, changed documents re-indexed."""

from pathlib import Path

import pytest

from alambic.agent.retrieval import Retriever, build_index, index_words
from alambic.documents import read_documents
from alambic.models.embedded import minilm_dir
from alambic.models.embeddings import Embedder

DOCS = {
    "shipping.md": "# Shipping\n\n## Abroad\nWe ship to Norway and Switzerland in 4 to 7 working days for £9.50.\n\n"
    "## Returns\nUnopened bags can be returned within 30 days for a full refund.\n",
    "cafe.md": "# The café\n\n## Hours\nThe espresso bar opens at 07:30 on weekdays and closes at 17:00.\n\n"
    "## Dogs\nAssistance dogs are welcome inside; other dogs on the terrace.\n",
    "arabic.md": "# الشحن\n\n## الدول العربية\nنشحن إلى مصر والأردن خلال 6 إلى 10 أيام عمل بتكلفة 14 جنيهاً.\n\n"
    "## الدلة\nدلة نحاسية تقليدية سعرها 58 جنيهاً وتُغسل باليد فقط.\n",
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(minilm_dir())


def write_docs(directory: Path, docs: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_english_and_arabic_questions_find_their_passage(tmp_path: Path, embedder: Embedder) -> None:
    docs = write_docs(tmp_path / "docs", DOCS)
    index = tmp_path / "index.sqlite"
    changes = build_index(index, read_documents(docs, tmp_path / "converted"), 300, embedder)
    assert (changes.added, changes.removed, changes.kept) == (3, 0, 0)
    retriever = Retriever(index, embedder)
    try:
        for question, expected in [
            ("Can I bring my dog into the café?", "Assistance dogs"),
            ("How long does shipping to Switzerland take?", "4 to 7 working days"),
            ("كم سعر الدلة النحاسية؟", "58 جنيهاً"),
            ("متى يصل الشحن إلى مصر؟", "6 إلى 10 أيام"),  # "الشحن" finds "نشحن"'s passage by its words
        ]:
            top = retriever.search(question, k=2)
            assert expected in top[0].text, (question, [p.citation for p in top])
            assert top[0].doc in DOCS and top[0].citation
        assert retriever.search("", k=4) == retriever.search("   ", k=4)
    finally:
        retriever.close()


def test_a_changed_document_is_indexed_anew_and_a_removed_one_is_gone(tmp_path: Path, embedder: Embedder) -> None:
    docs = write_docs(tmp_path / "docs", DOCS)
    index = tmp_path / "index.sqlite"
    build_index(index, read_documents(docs, tmp_path / "converted"), 300, embedder)
    (docs / "cafe.md").write_text(DOCS["cafe.md"].replace("07:30", "08:00"), encoding="utf-8")
    (docs / "arabic.md").unlink()
    changes = build_index(index, read_documents(docs, tmp_path / "converted"), 300, embedder)
    assert (changes.added, changes.removed, changes.kept) == (1, 2, 1)
    retriever = Retriever(index, embedder)
    try:
        [top] = retriever.search("When does the espresso bar open?", k=1)
        assert "08:00" in top.text
        assert all(passage.doc != "arabic.md" for passage in retriever.search("كم سعر الدلة؟", k=4))
    finally:
        retriever.close()


def test_arabic_words_are_indexed_with_and_without_their_article() -> None:
    assert index_words("والشحن إلى مصر") == ["والشحن", "شحن", "الي", "مصر"]
    assert index_words("Shipping FAQ") == ["shipping", "faq"]


def test_a_word_few_passages_use_weighs_more_than_a_common_one(tmp_path: Path, embedder: Embedder) -> None:
    docs = write_docs(tmp_path / "docs", DOCS)
    index = tmp_path / "index.sqlite"
    build_index(index, read_documents(docs, tmp_path / "converted"), 300, embedder)
    retriever = Retriever(index, embedder)
    try:
        weights = retriever.rarity(["espresso", "and", "kangaroo", "الدله", "دله"])
    finally:
        retriever.close()
    assert weights["and"] < weights["espresso"] < weights["kangaroo"]  # in some passages, one, none
    assert weights["الدله"] == weights["دله"] == weights["espresso"]  # folded, and found without its article
