"""Hybrid retrieval over a project's documents: SQLite FTS5 (BM25) over folded words, and the bundled MiniLM's
sentence vectors, fused by reciprocal rank. One SQLite file holds both, so the index travels with a release.

Arabic is searched by its words: the text is folded (diacritics, tatweel and the alef, ya and ta marbuta variants
set aside) and each Arabic word is indexed with and without a leading article or conjunction (ال، وال، بال، فال،
كال، لل، و), so "الشحن" and "وشحن" find "شحن". MiniLM reads English only: for Arabic the vectors add little and
BM25 carries the search.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alambic.documents.model import Document
from alambic.hashing import stable_hash
from alambic.models.embeddings import Embedder
from alambic.project import Project
from alambic.text import script, words

INDEX_FORMAT = 1
RRF_K = 60  # the usual constant of reciprocal rank fusion (Cormack et al. 2009)
CANDIDATES = 20  # hits taken from each retriever before fusion
ARABIC_PREFIXES = ("وال", "بال", "فال", "كال", "لل", "ال", "و")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, document TEXT NOT NULL, doc TEXT NOT NULL,
    citation TEXT NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS passage_words USING fts5(words, tokenize = 'unicode61 remove_diacritics 2');
"""


@dataclass(frozen=True)
class Passage:
    key: str
    doc: str
    citation: str
    text: str
    score: float  # the fused reciprocal-rank score: only the order means anything


@dataclass(frozen=True)
class Retrieval:
    passages: list[Passage]
    similarity: float  # the cosine of the question and the closest passage in meaning: calibrated for hand-offs


@dataclass(frozen=True)
class IndexChanges:
    added: int  # documents (re)indexed
    removed: int  # documents gone or changed
    kept: int  # documents unchanged


def smoothed_idf(documents: int, containing: int) -> float:
    """ln((1 + n) / (1 + df)) + 1: a word every document uses weighs about 1, one no document uses the most."""
    return math.log((1 + documents) / (1 + containing)) + 1


def word_rarity(texts: Sequence[str]) -> Callable[[Iterable[str]], dict[str, float]]:
    """`Retriever.rarity` over texts not yet indexed (synth's chunks): each folded word's smoothed IDF."""
    containing = Counter(word for text in texts for word in set(index_words(text)))
    return lambda terms: {term: smoothed_idf(len(texts), containing[term]) for term in set(terms)}


def index_words(text: str) -> list[str]:
    """The folded words of a text, each Arabic word also without its leading article or conjunction."""
    found = []
    for word in words(text):
        found.append(word)
        if script(word) == "ARABIC":
            for prefix in ARABIC_PREFIXES:
                if word.startswith(prefix) and len(word) - len(prefix) >= 2:
                    found.append(word[len(prefix) :])
                    break
    return found


def passage_key(document: Document, index: int, text: str) -> str:
    return stable_hash("passage", document.key, index, text)


def build_index(path: Path, documents: Iterable[Document], chunk_chars: int, embedder: Embedder) -> IndexChanges:
    """Brings the index at `path` up to date with `documents`: a document whose text changed (its key is a hash
    of its path and text) is indexed anew, one that is gone is removed, the rest is kept as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript(SCHEMA)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (str(INDEX_FORMAT),))
        current = {document.key: document for document in documents if document.text.strip()}
        indexed = {row[0] for row in db.execute("SELECT DISTINCT document FROM passages")}
        stale = indexed - set(current)
        for document_key in stale:
            ids = [row[0] for row in db.execute("SELECT id FROM passages WHERE document = ?", (document_key,))]
            db.executemany("DELETE FROM passage_words WHERE rowid = ?", [(i,) for i in ids])
            db.execute("DELETE FROM passages WHERE document = ?", (document_key,))
        new = [document for key, document in current.items() if key not in indexed]
        for document in new:
            chunks = document.chunks(chunk_chars)
            vectors = embedder.embed([chunk.text for chunk in chunks]).numpy().astype(np.float16)
            for chunk, vector in zip(chunks, vectors, strict=True):
                cursor = db.execute(
                    "INSERT INTO passages (key, document, doc, citation, text, vector) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        passage_key(document, chunk.index, chunk.text),
                        document.key,
                        document.relpath,
                        document.source(chunk).citation,
                        chunk.text,
                        vector.tobytes(),
                    ),
                )
                db.execute(
                    "INSERT INTO passage_words (rowid, words) VALUES (?, ?)",
                    (cursor.lastrowid, " ".join(index_words(chunk.text))),
                )
        db.commit()
        return IndexChanges(added=len(new), removed=len(stale), kept=len(indexed & set(current)))
    finally:
        db.close()


def project_index(project: Project, embedder: Embedder) -> Path:
    """The project's own index (.alambic/artifacts/retrieval), brought up to date with its documents."""
    path = project.artifact_dir("retrieval") / "index.sqlite"
    build_index(path, project.documents(), project.config.synth.chunk_chars, embedder)
    return path


class Retriever:
    """Searches an index made by build_index; safe to share between threads for reading."""

    def __init__(self, path: Path, embedder: Embedder) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.db.execute("CREATE VIRTUAL TABLE temp.vocabulary USING fts5vocab(main, passage_words, row)")
        rows = self.db.execute("SELECT id, vector FROM passages ORDER BY id").fetchall()
        self.ids = np.array([row[0] for row in rows], dtype=np.int64)
        self.vectors = (
            np.stack([np.frombuffer(row[1], dtype=np.float16) for row in rows]).astype(np.float32)
            if rows
            else np.zeros((0, 384), dtype=np.float32)
        )
        self.embedder = embedder

    def search(self, query: str, k: int = 4) -> list[Passage]:
        """The `k` passages that best answer `query`, best first."""
        return self.retrieve(query, k).passages

    def retrieve(self, query: str, k: int = 4) -> Retrieval:
        """The `k` best passages, and how close the closest one is in meaning."""
        similarities = self._similarities(query)
        fused: dict[int, float] = {}
        for ranking in (self.lexical_ranking(query), self._semantic(similarities)):
            for rank, passage_id in enumerate(ranking):
                fused[passage_id] = fused.get(passage_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
        closest = float(similarities.max()) if len(similarities) else -1.0
        return Retrieval([self.passage(passage_id, score) for passage_id, score in best], closest)

    def lexical_ranking(self, query: str) -> list[int]:
        """Passage ids by BM25 alone, best first."""
        terms = sorted(set(index_words(query)))
        if not terms:
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        rows = self.db.execute(
            "SELECT rowid FROM passage_words WHERE passage_words MATCH ? ORDER BY bm25(passage_words) LIMIT ?",
            (match, CANDIDATES),
        ).fetchall()
        return [row[0] for row in rows]

    def semantic_ranking(self, query: str) -> list[int]:
        """Passage ids by MiniLM similarity alone, best first."""
        return self._semantic(self._similarities(query))

    def _similarities(self, query: str) -> np.ndarray:
        if not len(self.ids):
            return np.zeros(0, dtype=np.float32)
        return self.vectors @ self.embedder.embed([query]).numpy()[0]

    def _semantic(self, similarities: np.ndarray) -> list[int]:
        order = np.argsort(-similarities, kind="stable")[:CANDIDATES]
        return [int(self.ids[i]) for i in order]

    def rarity(self, terms: Iterable[str]) -> dict[str, float]:
        """Each folded term's smoothed inverse document frequency over the passages (`smoothed_idf`)."""
        wanted = sorted(set(terms))
        placeholders = ",".join("?" * len(wanted))
        counts = dict(self.db.execute(f"SELECT term, doc FROM temp.vocabulary WHERE term IN ({placeholders})", wanted))
        return {term: smoothed_idf(len(self.ids), counts.get(term, 0)) for term in wanted}

    def texts(self) -> list[str]:
        """Every passage's text, in index order."""
        return [row[0] for row in self.db.execute("SELECT text FROM passages ORDER BY id")]

    def passage(self, passage_id: int, score: float = 0.0) -> Passage:
        key, doc, citation, text = self.db.execute(
            "SELECT key, doc, citation, text FROM passages WHERE id = ?", (passage_id,)
        ).fetchone()
        return Passage(key, doc, citation, text, score)

    def close(self) -> None:
        self.db.close()
