"""Training examples as token ids with answer labels, and micro-batches of them, packed or padded.

Labels in a `Batch` are already shifted, in the convention of `alambic.scoring.losses`: row t of the logits
predicts token t + 1, so it carries that token's label. The shift is done per example, before packing, so the
last row of one example never gets the first token of the next as its target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from alambic.models.base import Message
from alambic.scoring.losses import IGNORE_INDEX


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # the token itself where it is trained on, IGNORE_INDEX elsewhere
    key: str = ""  # the ledger item it was made from

    @property
    def answer_start(self) -> int:
        """The first row (of the logits) that predicts a labelled token."""
        first = next((i for i, label in enumerate(self.labels) if label != IGNORE_INDEX), len(self.labels))
        return max(first - 1, 0)

    @property
    def answer_ids(self) -> list[int]:
        """The labelled tokens, in order: the rows from `answer_start` predict them one after the other."""
        return [label for label in self.labels[1:] if label != IGNORE_INDEX]

    def shifted_labels(self) -> list[int]:
        return [*self.labels[1:], IGNORE_INDEX]


def encode(tokenizer: Any, messages: list[Message], max_len: int, key: str = "") -> Example:
    """Token ids of a whole conversation, with labels only on the last (assistant) turn."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("chat template does not extend the prompt; cannot mask the prompt tokens")
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    return Example(full_ids[:max_len], labels[:max_len], key)


def labelled_tokens(examples: Sequence[Example]) -> int:
    """The number of rows the loss is taken on: the normaliser of a step."""
    return sum(len(example.answer_ids) for example in examples)


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into rows of at most `capacity` tokens: first fit, longest first (deterministic)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    used: list[int] = []
    for index in order:
        row = next((r for r, size in enumerate(used) if size + lengths[index] <= capacity), None)
        if row is None:
            rows.append([index])
            used.append(lengths[index])
        else:
            rows[row].append(index)
            used[row] += lengths[index]
    return rows


@dataclass
class Batch:
    input_ids: Tensor  # [R, L]
    position_ids: Tensor  # [R, L]: restart at 0 at each example (and at the padding)
    attention_mask: Tensor | None  # [R, L]; None when packed: the position ids mark the boundaries
    labels: Tensor  # [R, L], shifted
    starts: list[int]  # flat position (row * L + offset) of each example's first token
    tokens: int  # real (non-padding) tokens

    def model_inputs(self) -> dict[str, Any]:
        # Without use_cache=False, transformers builds a KV cache and then ignores the packing boundaries.
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "attention_mask": self.attention_mask,
            "use_cache": False,
        }

    def to(self, device: torch.device) -> Batch:
        if self.input_ids.device == device:
            return self
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        moved = (self.input_ids.to(device), self.position_ids.to(device), mask, self.labels.to(device))
        return Batch(*moved, self.starts, self.tokens)

    def answer_rows(self, index: int, example: Example, count: int) -> Tensor:
        """Flat positions of the first `count` rows that predict example `index`'s labelled tokens."""
        first = self.starts[index] + example.answer_start
        return torch.arange(first, first + count)


def make_batch(examples: Sequence[Example], pad_id: int, packing: bool, capacity: int) -> Batch:
    lengths = [len(example.input_ids) for example in examples]
    rows = pack(lengths, max(capacity, *lengths)) if packing else [[i] for i in range(len(examples))]
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    starts = [0] * len(examples)
    for r, row in enumerate(rows):
        offset = 0
        for index in row:
            example, n = examples[index], lengths[index]
            ids[r, offset : offset + n] = torch.tensor(example.input_ids)
            labels[r, offset : offset + n] = torch.tensor(example.shifted_labels())
            positions[r, offset : offset + n] = torch.arange(n)
            mask[r, offset : offset + n] = 1
            starts[index] = r * width + offset
            offset += n
        positions[r, offset:] = torch.arange(width - offset)
    return Batch(ids, positions, None if packing else mask, labels, starts, sum(lengths))
