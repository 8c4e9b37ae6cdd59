"""A teacher API's per-token logprobs (OpenAI's ``top_logprobs``) as top-k rows over the student's token ids.

An API names its tokens by their text (and, for OpenAI, by their UTF-8 bytes), never by id. Each one is mapped
to the student token with the same bytes. An answer counts only if the teacher's sampled tokens are exactly the
student's tokenisation of that answer, so row j really is the teacher's distribution for the student's answer
token j. Servers that give only the text (llama.cpp) decode each token on its own and drop the bytes of a
token that splits a UTF-8 character: such a sampled token still matches the student token it came from, but an
alternative whose text could be what is left of one is dropped (its mass counts as tail), since it cannot be
told apart from a whole token.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alambic.distill.logits_store import TopK

# Fills rows that have fewer entries than the store's k: a log-prob the store reads back as (almost) no mass.
FILLER_LOGPROB = -30.0
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenBytes:
    """The bytes each student token stands for, and the token of given bytes."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        decoder_spec = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder"))
        byte_level = '"ByteLevel"' in decoder_spec
        unicode_to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
        added = {token.content for token in tokenizer.added_tokens_decoder.values()}
        self.of_id: dict[int, bytes] = {}
        for token, token_id in tokenizer.get_vocab().items():
            if token in added:
                self.of_id[token_id] = token.encode("utf-8")
            elif byte_level:
                self.of_id[token_id] = bytes(unicode_to_byte[char] for char in token)
            elif match := _BYTE_TOKEN.fullmatch(token):  # SentencePiece byte fallback
                self.of_id[token_id] = bytes([int(match.group(1), 16)])
            else:
                self.of_id[token_id] = token.replace("▁", " ").encode("utf-8")
        self.id_of: dict[bytes, int] = {}
        for token_id in sorted(self.of_id):
            self.id_of.setdefault(self.of_id[token_id], token_id)
        # What a text-only server shows for each token that splits a character.
        self.lossy_text_of: dict[int, bytes] = {
            token_id: raw.decode("utf-8", "ignore").encode("utf-8")
            for token_id, raw in self.of_id.items()
            if not _is_utf8(raw)
        }
        self.ambiguous_texts = set(self.lossy_text_of.values())

    def is_partial_character(self, token_id: int) -> bool:
        return token_id in self.lossy_text_of

    def matches(self, entry: dict[str, Any], token_id: int) -> bool:
        """Whether an API token is this student token."""
        raw, exact = _entry_bytes(entry)
        return raw == self.of_id.get(token_id) or (not exact and raw == self.lossy_text_of.get(token_id))

    def alternative(self, entry: dict[str, Any]) -> int | None:
        """The student token of an API alternative, unless it cannot be told for sure."""
        raw, exact = _entry_bytes(entry)
        if not exact and raw in self.ambiguous_texts:
            return None
        return self.id_of.get(raw)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _entry_bytes(entry: dict[str, Any]) -> tuple[bytes, bool]:
    """The token's bytes, and whether they are exact (given as bytes) or its text, possibly lossy."""
    raw = entry.get("bytes")
    if raw is not None:
        return bytes(raw), True
    return str(entry.get("token", "")).encode("utf-8"), False


def _is_space(entry: dict[str, Any]) -> bool:
    raw = _entry_bytes(entry)[0]
    return bool(raw) and raw.isspace()


def _strip(entries: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """The tokens of the stripped answer: synth stores ``text.strip()``."""
    start, end = 0, len(entries)
    while start < end and _is_space(entries[start]):
        start += 1
    while end > start and _is_space(entries[end - 1]):
        end -= 1
    return entries[start:end]


def map_answer(
    entries: Sequence[dict[str, Any]], answer_ids: Sequence[int], vocab: TokenBytes
) -> list[dict[int, float]] | None:
    """Per answer token, {student id: teacher log-prob}; None if the teacher's tokens are not the student's."""
    tokens = _strip(entries)
    count = min(len(tokens), len(answer_ids))
    if count == 0:
        return None
    rows = []
    for entry, expected in zip(tokens[:count], answer_ids[:count], strict=True):
        if not vocab.matches(entry, expected):
            return None
        row = {expected: float(entry["logprob"])}
        for alternative in entry.get("top_logprobs") or []:
            token_id = vocab.alternative(alternative)
            if token_id is not None and token_id != expected:
                row[token_id] = max(row.get(token_id, -np.inf), float(alternative["logprob"]))
        rows.append(row)
    return rows


def as_top_k(rows: list[dict[int, float]], k: int) -> TopK:
    """Rows of a fixed width k: the k most likely entries, padded with unused ids of (almost) no mass."""
    import torch

    ids = np.zeros((len(rows), k), dtype=np.int64)
    logprobs = np.full((len(rows), k), FILLER_LOGPROB, dtype=np.float32)
    for r, row in enumerate(rows):
        kept = sorted(row.items(), key=lambda pair: -pair[1])[:k]
        fillers = (i for i in range(k + len(kept)) if i not in row)
        for column in range(k):
            if column < len(kept):
                ids[r, column], logprobs[r, column] = kept[column]
            else:
                ids[r, column] = next(fillers)
    return TopK(torch.from_numpy(ids), torch.from_numpy(logprobs))


class Missing(enum.Enum):
    """An item without stored logprobs (synth.logprobs was off, or the item is not a teacher answer)."""

    MISSING = "missing"


MISSING = Missing.MISSING


@dataclass
class MappingCounts:
    mapped: int = 0
    mismatched: int = 0  # the teacher's tokens are not the student's tokenisation of the answer
    missing: int = 0  # no stored logprobs

    def add(self, mapped: list[dict[int, float]] | Missing | None) -> None:
        if mapped is MISSING:
            self.missing += 1
        elif mapped is None:
            self.mismatched += 1
        else:
            self.mapped += 1

    def as_dict(self) -> dict[str, int]:
        return {"mapped": self.mapped, "mismatched": self.mismatched, "missing": self.missing}
