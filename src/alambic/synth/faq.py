"""The documents' own questions and answers: a section whose heading is a question ("## Do you ship abroad?",
"## هل تشحنون إلى الدول العربية؟") and whose body fits one chunk is a training conversation in the business's own
words, in the document's language, written by no teacher. It is the chunk retrieval returns for that question,
so trained as the agent asks, it shows the student how to answer from a passage, in every language the documents
are written in, whatever language the teacher writes best."""

from __future__ import annotations

import re
from collections import Counter

from alambic.dataset import FAQ_KIND
from alambic.hashing import stable_hash
from alambic.store import Item, Ledger
from alambic.synth.engine import STAGE, KeyedChunk

KIND = FAQ_KIND
QUESTION_MARKS = ("?", "؟", "？")
LISTED = re.compile(r"^\s*([-*+|]|\d+[.)])", re.MULTILINE)  # a paragraph with a list item or table row


def faq_question(chunk: KeyedChunk) -> str | None:
    """The chunk's last heading when it is a question, else None."""
    headings = chunk.chunk.headings
    question = headings[-1].strip() if headings else ""
    return question if question.endswith(QUESTION_MARKS) else None


def section_body(chunk: KeyedChunk) -> str:
    """The chunk's text without the heading path it starts with, each paragraph's wrapped lines joined (an answer
    is read in a chat, not at the document's width); lists and tables keep their lines."""
    title = " > ".join(chunk.chunk.headings)
    paragraphs = chunk.chunk.text.removeprefix(title).strip().split("\n\n")
    return "\n\n".join(p if LISTED.search(p) else " ".join(p.split("\n")) for p in paragraphs)


def faq_chunks(chunks: list[KeyedChunk]) -> list[KeyedChunk]:
    """The chunks that hold a whole section under a question heading (a section cut into several chunks would
    answer with a part of itself)."""
    sections = Counter((c.chunk.doc, c.chunk.headings) for c in chunks)
    return [
        c
        for c in chunks
        if faq_question(c) is not None and sections[(c.chunk.doc, c.chunk.headings)] == 1 and section_body(c)
    ]


def record_faq_items(ledger: Ledger, run_id: str, chunks: list[KeyedChunk], system_prompt: str) -> tuple[str, int]:
    """Store each question section of the documents as an accepted item, the child of its chunk, which gives it its
    split; returns the fingerprint that marks these items and how many there are."""
    found = [(chunk, faq_question(chunk), section_body(chunk)) for chunk in faq_chunks(chunks)]
    # What was taken, not only where from: a change in how sections are read makes new items, never stale ones.
    fingerprint = stable_hash(KIND, system_prompt, [(c.key, question, answer) for c, question, answer in found])[:16]
    batch: list[tuple[Item, list[str]]] = []
    for number, (chunk, question, answer) in enumerate(found):
        payload = {
            "recipe": KIND,
            "fingerprint": fingerprint,
            "order": [0, number],
            "chunk": chunk.key,
            "citation": chunk.citation,
            "question": question,
            "answer": answer,
            "messages": [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
        }
        key = stable_hash(KIND, fingerprint, chunk.key)
        batch.append((Item(key, run_id, STAGE, KIND, "ok", payload), [chunk.key]))
    if batch:
        ledger.put_items(batch)
    return fingerprint, len(batch)
