"""Near-duplicates: MinHash LSH over word shingles (any script), then embedding cosine with MiniLM."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from datasketch import MinHash, MinHashLSH

from alambic.text import words


def shingles(text: str, size: int) -> set[str]:
    tokens = words(text)
    if len(tokens) <= size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


class MinHashDeduper:
    """Remembers the texts it has kept; `duplicate_of` names a kept text this one nearly repeats."""

    def __init__(self, threshold: float, num_perm: int, shingle_words: int) -> None:
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self.threshold = threshold
        self.signatures: dict[str, MinHash] = {}

    def signature(self, text: str) -> MinHash:
        signature = MinHash(num_perm=self.num_perm, seed=1)
        signature.update_batch([s.encode("utf-8") for s in shingles(text, self.shingle_words)])
        return signature

    def duplicate_of(self, key: str, text: str) -> str | None:
        """The key of a kept near-duplicate, or None (and then this text is kept)."""
        signature = self.signature(text)
        for candidate in self.lsh.query(signature):
            if signature.jaccard(self.signatures[candidate]) >= self.threshold:
                return candidate
        self.lsh.insert(key, signature)
        self.signatures[key] = signature
        return None


def embedding_duplicates(keys: list[str], vectors: torch.Tensor, threshold: float, block: int = 512) -> dict[str, str]:
    """{key: earlier key} for each item whose embedding is within `threshold` cosine of an earlier kept one.

    Rows are compared a block at a time against everything before them (one matrix product per block).
    """
    duplicates: dict[str, str] = {}
    kept = torch.zeros(len(keys), dtype=torch.bool)
    for start in range(0, len(keys), block):
        end = min(start + block, len(keys))
        similarities = vectors[start:end] @ vectors[:end].T
        for row in range(start, end):
            earlier = similarities[row - start, :row].masked_fill(~kept[:row], -2.0)
            if row and float(earlier.max()) >= threshold:
                duplicates[keys[row]] = keys[int(earlier.argmax())]
            else:
                kept[row] = True
    return duplicates


def ngrams(texts: Iterable[str], size: int) -> set[tuple[str, ...]]:
    """Word n-grams of the texts; a text shorter than `size` words counts whole."""
    grams: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = words(text)
        if len(tokens) < size:
            if tokens:
                grams.add(tuple(tokens))
            continue
        grams.update(tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1))
    return grams
