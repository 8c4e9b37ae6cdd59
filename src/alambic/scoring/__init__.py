"""How well a model predicts given tokens: the held-out loss of answers and the KL to a teacher's
distribution over them. distill trains on these quantities and evaluate reports them, from the same code."""

from __future__ import annotations

from typing import Any

import torch

from alambic.scoring.batches import Example, labelled_tokens, make_batch
from alambic.scoring.losses import IGNORE_INDEX, Head, distillation_loss


def unwrapped(model: Any) -> Any:
    """The transformers model under a PEFT wrapper, if any."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_and_head(model: Any) -> tuple[Any, Head]:
    """The transformer body (hidden states out) and the output layer of a causal LM, PEFT-wrapped or not."""
    base = unwrapped(model)
    return base.get_decoder(), base.get_output_embeddings()


@torch.no_grad()
def mean_loss(model: Any, examples: list[Example], pad_id: int, batch_size: int = 8) -> float:
    """Token-weighted cross-entropy over the labelled tokens."""
    model.eval()
    total = 0.0
    decoder, head = decoder_and_head(model)
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        batch = make_batch(examples[start : start + batch_size], pad_id, packing=False, capacity=0).to(device)
        hidden = decoder(**batch.model_inputs()).last_hidden_state
        total += float(distillation_loss(hidden, batch.labels, None, kd_ratio=0.0, num_tokens=1, student_head=head).ce)
    return total / max(labelled_tokens(examples), 1)


@torch.inference_mode()
def mean_kl(student: Any, teacher: Any, examples: list[Example]) -> float | None:
    """Mean forward KL(teacher ‖ student) per labelled token of `examples`, both models reading the same token
    ids (so they must share a tokenizer); None if there are no labelled tokens."""
    total, tokens = 0.0, 0
    for example in examples:
        ids = torch.tensor([example.input_ids])
        rows = torch.tensor([label != IGNORE_INDEX for label in example.shifted_labels()])
        student_logits = student(input_ids=ids).logits[0, rows].float()
        teacher_logits = teacher(input_ids=ids).logits[0, rows].float()
        vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
        student_log = torch.log_softmax(student_logits[:, :vocab], -1)
        teacher_log = torch.log_softmax(teacher_logits[:, :vocab], -1)
        total += float((teacher_log.exp() * (teacher_log - student_log)).sum())
        tokens += int(rows.sum())
    return total / tokens if tokens else None
