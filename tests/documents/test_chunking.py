from alambic.documents import chunk_document

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


def test_page_breaks_end_chunks_but_keep_the_heading_path() -> None:
    text = "# Warranty\n\nGrinders have two years.\n\nKettles have two years."
    second = text.index("Kettles")
    chunks = chunk_document("w.pdf", text, max_chars=900, breaks=[second])
    assert [c.text for c in chunks] == ["Warranty\n\nGrinders have two years.", "Warranty\n\nKettles have two years."]
    assert [(c.start, c.end) for c in chunks] == [(12, 36), (second, len(text))]


def test_sibling_headings_replace_each_other_without_a_title() -> None:
    text = (
        "## Shipping\n\nWe ship to the EU.\n\n## Returns\n\n30 days.\n\n"
        "### Faulty\n\nWe replace it.\n\n## Hours\n\n9 to 5."
    )
    chunks = chunk_document("policy.md", text, max_chars=30)
    assert [c.headings for c in chunks] == [("Shipping",), ("Returns",), ("Returns", "Faulty"), ("Hours",)]


def test_long_tables_are_cut_between_rows_and_each_piece_keeps_the_header() -> None:
    rows = "\n".join(f"| SKU-{i} | Bag {i}. Fresh | {i} |" for i in range(300))
    text = "## Stock\n\n| SKU | Note | Price |\n| --- | --- | --- |\n" + rows
    chunks = chunk_document("stock.csv", text, max_chars=900)
    assert len(chunks) > 5 and max(len(c.text) for c in chunks) <= 900
    body_rows = []
    for chunk in chunks:
        lines = chunk.text.split("\n\n", 1)[1].split("\n")
        assert lines[:2] == ["| SKU | Note | Price |", "| --- | --- | --- |"]
        assert text[chunk.start : chunk.end] == "\n".join(lines[2:])
        body_rows += lines[2:]
    assert body_rows == rows.split("\n")


def test_text_without_sentence_breaks_still_fits_the_chunk_size() -> None:
    for text in ("word " * 5000, "咖啡豆每周二和周四烘焙。" * 300, "x" * 5000):
        chunks = chunk_document("doc.txt", text, max_chars=900)
        assert max(len(c.text) for c in chunks) <= 900
        assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")
