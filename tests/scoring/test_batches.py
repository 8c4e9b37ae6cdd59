"""Packing keeps examples apart, and gradient accumulation is normalised by the step's real token count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alambic.config import DistillSection
from alambic.distill.student import prune_layers
from alambic.distill.teachers import DenseTeacher, HFTeacher
from alambic.distill.train import Trainer, batch_loss
from alambic.models.hf import load_causal_lm, load_tokenizer
from alambic.scoring.batches import Batch, Example, encode, labelled_tokens, make_batch, pack

SYSTEM = {"role": "system", "content": "You are the support assistant of a coffee roastery."}
TURNS = [
    ("When do you roast?", "We roast every Tuesday and Thursday."),
    ("Do you ship to Egypt?", "Yes, we ship to Egypt within six to ten working days, tracked all the way."),
    ("Is the shop open on Sunday?", "No."),
    ("هل تشحنون إلى مصر؟", "نعم، نشحن إلى مصر خلال 6 إلى 10 أيام عمل."),
    ("Which grind for a moka pot?", "A fine grind, a little coarser than for espresso, works best in a moka pot."),
    ("Can I return opened beans?", "Opened bags cannot be returned, but tell us if something is wrong with them."),
    ("Do you sell decaf?", "Yes, a Colombian decaf, processed with sugar cane."),
    ("Gift cards?", "We sell gift cards from 10 to 100 euros, in the shop and online."),
]


def conversation(question: str, answer: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@pytest.fixture(scope="module")
def examples(tiny_model_dir: Path) -> list[Example]:
    tokenizer = load_tokenizer(tiny_model_dir)
    return [encode(tokenizer, conversation(q, a), 256, key=f"item-{i}") for i, (q, a) in enumerate(TURNS)]


def student(tiny_model_dir: Path) -> torch.nn.Module:
    """A student that differs from the tiny teacher: its first and last layers only."""
    torch.manual_seed(0)
    return prune_layers(load_causal_lm(tiny_model_dir), [0, 3]).train()


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_pack_fits_longest_first_without_overflow() -> None:
    assert pack([5, 3, 8, 2, 4], capacity=10) == [[2, 3], [0, 4], [1]]
    assert pack([4, 4], capacity=3) == [[0], [1]]  # an example longer than a row gets a row of its own


def test_batch_restarts_positions_and_shifts_labels_per_example(examples: list[Example]) -> None:
    first, second = examples[0], examples[2]
    batch = make_batch([first, second], pad_id=2, packing=True, capacity=256)
    n = len(first.input_ids)
    assert batch.input_ids.shape[0] == 1 and batch.attention_mask is None
    assert batch.position_ids[0, : n + 3].tolist() == [*range(n), 0, 1, 2]
    assert batch.labels[0, n - 1] == -100  # the last row of an example never predicts the next example
    assert batch.labels[0, : n - 1].tolist() == first.labels[1:]


@pytest.mark.parametrize("method", ["sft", "kd"])
def test_packed_loss_equals_the_sum_of_unpacked_losses(
    tiny_model_dir: Path, examples: list[Example], method: str
) -> None:
    chosen = examples[:4]
    settings = DistillSection(method=method, kd_ratio=0.5, beta=0.5, temperature=2.0, precision="fp32")
    teacher = DenseTeacher(HFTeacher(tiny_model_dir, False), chosen, chosen, 2) if method == "kd" else None
    model = student(tiny_model_dir)
    total = labelled_tokens(chosen)
    packed = make_batch(chosen, pad_id=2, packing=True, capacity=1024)
    assert packed.input_ids.shape[0] == 1  # all four in one sequence
    loss = batch_loss(model, packed, range(4), teacher, settings, total)
    loss.loss.backward()
    packed_grads = grads(model)
    model.zero_grad()
    separate = 0.0
    for i, example in enumerate(chosen):
        alone = batch_loss(model, make_batch([example], 2, True, 1024), [i], teacher, settings, total)
        alone.loss.backward()
        separate += float(alone.loss.detach())
    assert float(loss.loss.detach()) == pytest.approx(separate, rel=1e-5)
    for name, grad in grads(model).items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    if method == "kd":
        assert float(loss.kd) > 0.01  # the student differs from its teacher: the KD term is really there

    # Control: with positions running on (no boundaries) the later examples see the earlier ones.
    width = packed.input_ids.shape[1]
    unbounded = Batch(packed.input_ids, torch.arange(width)[None], None, packed.labels, packed.starts, packed.tokens)
    last_index = max(range(4), key=lambda i: packed.starts[i])  # packing reorders: the one placed last
    last = chosen[last_index]
    rows = slice(packed.starts[last_index], packed.starts[last_index] + len(last.input_ids))
    with torch.no_grad():
        alone = model(**make_batch([last], 2, True, 1024).model_inputs()).logits[0]
        bounded = model(**packed.model_inputs()).logits[0, rows]
        leaked = model(**unbounded.model_inputs()).logits[0, rows]
    assert (bounded - alone).abs().max() < 1e-4
    assert (leaked - alone).abs().max() > 1e-2


@pytest.mark.parametrize("method", ["sft", "kd"])
def test_accumulating_4x2_gives_the_gradients_of_one_batch_of_8(
    tiny_model_dir: Path, examples: list[Example], method: str
) -> None:
    def step_grads(accumulation: int) -> tuple[dict[str, torch.Tensor], float]:
        settings = DistillSection(
            method=method, batch_size=8, grad_accumulation=accumulation, precision="fp32", kd_ratio=0.7
        )
        teacher = DenseTeacher(HFTeacher(tiny_model_dir, False), examples, examples, 2) if method == "kd" else None
        trainer = Trainer(student(tiny_model_dir), examples, 2, settings, Path("unused"), teacher)
        indices = list(range(8))
        if accumulation > 1:
            parts = trainer.micro_batches(indices)
            assert [len(part) for part in parts] == [2, 2, 2, 2]
            # Micro-batches of unequal token counts: averaging their means would weight tokens unequally.
            assert len({labelled_tokens([examples[i] for i in part]) for part in parts}) > 1
        loss, _ = trainer.accumulate(indices)
        return grads(trainer.model), loss

    whole, whole_loss = step_grads(1)
    accumulated, accumulated_loss = step_grads(4)
    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-5)
    assert whole.keys() == accumulated.keys()
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-4, atol=1e-7, msg=name)
