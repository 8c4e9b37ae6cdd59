"""The distillation losses against direct float64 computations written out from the definitions."""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from alambic.scoring.losses import (
    TopKTeacher,
    distillation_loss,
    generalised_jsd,
    shift_labels,
    sparse_generalised_jsd,
)

B, T, V, K = 2, 6, 11, 4
BETAS = [0.0, 0.3, 0.5, 1.0]


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    student = (2 * torch.randn(B, T, V, generator=generator, dtype=torch.float64)).requires_grad_()
    teacher = 2 * torch.randn(B, T, V, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T), generator=generator)
    labels[0, :2] = -100  # a prompt
    labels[1, -1] = -100  # padding
    top = torch.log_softmax(teacher, dim=-1).topk(K, dim=-1)
    order = torch.randperm(K, generator=generator)  # the loss must not depend on the order of the top-k
    return {
        "student": student,
        "teacher": teacher,
        "labels": labels,
        "ids": top.indices[..., order],
        "logprobs": top.values[..., order],
    }


# references: explicit sums over softmax probabilities, one row at a time ----------------------------


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def divergence(p: list[float], q: list[float], beta: float) -> float:
    """D_β(teacher p ‖ student q): forward KL at 0, reverse KL at 1, generalised JSD between."""
    if beta == 0:
        return kl(p, q)
    if beta == 1:
        return kl(q, p)
    m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q, strict=True)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def softmax(values: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def kept_rows(batch: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    return [(b, t) for b in range(B) for t in range(T) if batch["labels"][b, t] != -100]


def reference_dense(batch: dict[str, torch.Tensor], beta: float, temperature: float) -> torch.Tensor:
    """T² · mean over kept rows of D_β, as a differentiable function of the student logits."""
    total = torch.zeros((), dtype=torch.float64)
    for b, t in kept_rows(batch):
        q = torch.softmax(batch["student"][b, t] / temperature, dim=-1)
        p = torch.softmax(batch["teacher"][b, t] / temperature, dim=-1)
        total = total + torch_divergence(p, q, beta)
    return temperature**2 * total / len(kept_rows(batch))


def torch_divergence(p: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    def kl_(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return sum((a[i] * torch.log(a[i] / c[i]) for i in range(len(a)) if a[i] > 0), torch.zeros((), dtype=a.dtype))

    if beta == 0:
        return kl_(p, q)
    if beta == 1:
        return kl_(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl_(p, m) + (1 - beta) * kl_(q, m)


def reference_sparse(batch: dict[str, torch.Tensor], tail: str, beta: float, temperature: float) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for b, t in kept_rows(batch):
        ids = batch["ids"][b, t].tolist()
        given = [math.exp(v) for v in batch["logprobs"][b, t].tolist()]  # teacher probabilities at T=1
        mass = sum(given)
        q_full = torch.softmax(batch["student"][b, t] / temperature, dim=-1)
        if tail == "zero":
            shape = [g ** (1 / temperature) for g in given]
            p = torch.tensor([mass * s / sum(shape) for s in shape], dtype=torch.float64)
            q = q_full[ids]
            total = total + sum(p[i] * torch.log(p[i] / q[i]) for i in range(K))
        elif tail == "uniform":
            full = [(1 - mass) / (V - K)] * V
            for i, g in zip(ids, given, strict=True):
                full[i] = g
            tempered = [f ** (1 / temperature) for f in full]
            p = torch.tensor([x / sum(tempered) for x in tempered], dtype=torch.float64)
            total = total + torch_divergence(p, q_full, beta)
        else:
            shape = [g ** (1 / temperature) for g in given]
            p = torch.tensor([s / sum(shape) for s in shape], dtype=torch.float64)
            q = torch.softmax(batch["student"][b, t][ids] / temperature, dim=-1)
            total = total + torch_divergence(p, q, beta)
    return temperature**2 * total / len(kept_rows(batch))


def assert_same_value_and_grad(loss: torch.Tensor, expected: torch.Tensor, student: torch.Tensor) -> None:
    (grad,) = torch.autograd.grad(loss, student)
    (expected_grad,) = torch.autograd.grad(expected, student)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-7, atol=1e-10)


# dense --------------------------------------------------------------------------------------------


def test_reference_helpers_agree_with_the_definitions() -> None:
    p, q = softmax([1.0, 2.0, 0.5]), softmax([0.0, 1.0, 3.0])
    assert divergence(p, q, 0) == pytest.approx(kl(p, q))
    assert divergence(p, q, 1) == pytest.approx(kl(q, p))
    half = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    assert divergence(p, q, 0.5) == pytest.approx((kl(p, half) + kl(q, half)) / 2)  # the symmetric JSD


@pytest.mark.parametrize("beta", BETAS)
def test_dense_matches_the_reference(batch: dict[str, torch.Tensor], beta: float) -> None:
    loss = generalised_jsd(batch["student"], batch["teacher"], beta=beta, labels=batch["labels"], chunk_tokens=5)
    assert_same_value_and_grad(loss, reference_dense(batch, beta, 1.0), batch["student"])


def test_endpoints_are_forward_and_reverse_kl(batch: dict[str, torch.Tensor]) -> None:
    student, teacher = batch["student"].detach()[0, 3], batch["teacher"][0, 3]
    p, q = softmax(teacher.tolist()), softmax(student.tolist())
    forward = generalised_jsd(student[None], teacher[None], beta=0.0)
    reverse = generalised_jsd(student[None], teacher[None], beta=1.0)
    assert float(forward) == pytest.approx(kl(p, q), rel=1e-10)  # KL(teacher ‖ student)
    assert float(reverse) == pytest.approx(kl(q, p), rel=1e-10)  # KL(student ‖ teacher)
    assert float(forward) != pytest.approx(float(reverse), rel=1e-3)
    middle = generalised_jsd(student[None], teacher[None], beta=0.3)
    assert float(middle) == pytest.approx(divergence(p, q, 0.3), rel=1e-10)


def test_a_teacher_with_zero_probabilities_gives_finite_forward_kl(batch: dict[str, torch.Tensor]) -> None:
    teacher = batch["teacher"].clone()
    teacher[..., :3] = -math.inf  # tokens the teacher never emits: 0 · log 0 counts as 0
    loss = generalised_jsd(batch["student"], teacher, labels=batch["labels"], chunk_tokens=5)
    # assert_close fails on a NaN in the value or the gradient
    assert_same_value_and_grad(loss, reference_dense({**batch, "teacher": teacher}, 0.0, 1.0), batch["student"])


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_temperature_reaches_the_loss_with_its_square(batch: dict[str, torch.Tensor], beta: float) -> None:
    loss = generalised_jsd(batch["student"], batch["teacher"], beta=beta, temperature=2.0, labels=batch["labels"])
    assert_same_value_and_grad(loss, reference_dense(batch, beta, 2.0), batch["student"])
    # T² on top of D at temperature T: the same as D on logits divided by T, times 4.
    at_one = generalised_jsd(batch["student"] / 2, batch["teacher"] / 2, beta=beta, labels=batch["labels"])
    torch.testing.assert_close(loss, 4 * at_one)
    plain = generalised_jsd(batch["student"], batch["teacher"], beta=beta, labels=batch["labels"])
    assert abs(loss.item() - plain.item()) > 1e-3


def test_masked_rows_count_for_nothing(batch: dict[str, torch.Tensor]) -> None:
    labels = batch["labels"]
    loss = generalised_jsd(batch["student"], batch["teacher"], labels=labels)
    (grad,) = torch.autograd.grad(loss, batch["student"])
    assert torch.all(grad[labels == -100] == 0)
    assert torch.any(grad[labels != -100] != 0)
    noisy = batch["student"].detach().clone()
    noisy[labels == -100] = 1e4  # whatever the masked rows hold
    torch.testing.assert_close(generalised_jsd(noisy, batch["teacher"], labels=labels), loss.detach())
    # Without labels every row counts, and the mean is over all of them.
    everything = generalised_jsd(batch["student"], batch["teacher"], labels=None)
    all_kept = torch.zeros_like(labels)
    torch.testing.assert_close(everything, generalised_jsd(batch["student"], batch["teacher"], labels=all_kept))


def test_no_kept_rows_gives_a_zero_that_backpropagates(batch: dict[str, torch.Tensor]) -> None:
    labels = torch.full((B, T), -100)
    loss = generalised_jsd(batch["student"], batch["teacher"], labels=labels)
    loss.backward()
    assert loss.item() == 0.0
    assert batch["student"].grad is not None and torch.all(batch["student"].grad == 0)


# sparse -------------------------------------------------------------------------------------------

SPARSE_CASES = [
    ("zero", 0.0),
    ("uniform", 0.0),
    ("uniform", 0.3),
    ("uniform", 1.0),
    ("renormalise", 0.0),
    ("renormalise", 0.5),
    ("renormalise", 1.0),
]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize(("tail", "beta"), SPARSE_CASES)
def test_sparse_matches_the_reference(
    batch: dict[str, torch.Tensor], tail: str, beta: float, temperature: float
) -> None:
    loss = sparse_generalised_jsd(
        batch["student"],
        batch["ids"],
        batch["logprobs"],
        tail=tail,  # type: ignore[arg-type]
        beta=beta,
        temperature=temperature,
        labels=batch["labels"],
        chunk_tokens=4,
    )
    assert_same_value_and_grad(loss, reference_sparse(batch, tail, beta, temperature), batch["student"])


def test_zero_tail_at_temperature_one_uses_the_probabilities_as_given(batch: dict[str, torch.Tensor]) -> None:
    student, ids, logprobs = batch["student"].detach()[0, 4], batch["ids"][0, 4], batch["logprobs"][0, 4]
    q = softmax(student.tolist())
    expected = sum(math.exp(lp) * (lp - math.log(q[i])) for i, lp in zip(ids.tolist(), logprobs.tolist(), strict=True))
    loss = sparse_generalised_jsd(student[None], ids[None], logprobs[None], tail="zero")
    assert float(loss) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_zero_tail_refuses_reverse_kl_and_jsd(batch: dict[str, torch.Tensor], beta: float) -> None:
    with pytest.raises(ValueError, match="zero tail"):
        sparse_generalised_jsd(batch["student"], batch["ids"], batch["logprobs"], tail="zero", beta=beta)
    teacher = TopKTeacher(batch["ids"], batch["logprobs"], "zero")
    with pytest.raises(ValueError, match="zero tail"):
        distillation_loss(batch["student"], batch["labels"], teacher, beta=beta)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("tail", ["uniform", "renormalise"])
def test_sparse_with_the_whole_vocabulary_is_the_dense_loss(
    batch: dict[str, torch.Tensor], tail: str, beta: float
) -> None:
    full = torch.log_softmax(batch["teacher"], dim=-1).sort(dim=-1, descending=True)
    kwargs = {"beta": beta, "temperature": 1.5, "labels": batch["labels"]}
    sparse = sparse_generalised_jsd(batch["student"], full.indices, full.values, tail=tail, **kwargs)  # type: ignore[arg-type]
    dense = generalised_jsd(batch["student"], batch["teacher"], **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(sparse, dense)


# chunking and normalisation -----------------------------------------------------------------------


def losses_under_test(batch: dict[str, torch.Tensor], chunk_tokens: int, num_tokens: int | None = None) -> list:
    common = {"labels": batch["labels"], "chunk_tokens": chunk_tokens, "num_tokens": num_tokens}
    student = batch["student"]
    out = [
        generalised_jsd(student, batch["teacher"], beta=beta, temperature=1.7, **common)  # type: ignore[arg-type]
        for beta in BETAS
    ]
    for tail, beta in SPARSE_CASES:
        out.append(
            sparse_generalised_jsd(student, batch["ids"], batch["logprobs"], tail=tail, beta=beta, **common)  # type: ignore[arg-type]
        )
    for teacher in (batch["teacher"], TopKTeacher(batch["ids"], batch["logprobs"], "uniform")):
        out.append(
            distillation_loss(
                student,
                batch["labels"],
                teacher,
                kd_ratio=0.7,
                beta=0.5,
                temperature=2.0,
                chunk_tokens=chunk_tokens,
                num_tokens=num_tokens,
            ).loss
        )
    return out


@pytest.mark.parametrize("chunk_tokens", [1, 3, 5])
def test_chunked_equals_unchunked(batch: dict[str, torch.Tensor], chunk_tokens: int) -> None:
    for chunked, whole in zip(losses_under_test(batch, chunk_tokens), losses_under_test(batch, 10**6), strict=True):
        (grad_chunked,) = torch.autograd.grad(chunked, batch["student"])
        (grad_whole,) = torch.autograd.grad(whole, batch["student"])
        torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_chunked, grad_whole, rtol=1e-10, atol=1e-12)


def test_no_grad_gives_the_same_value(batch: dict[str, torch.Tensor]) -> None:
    with_grad = losses_under_test(batch, 3)
    with torch.no_grad():
        without = losses_under_test(batch, 3)
    for a, b in zip(with_grad, without, strict=True):
        torch.testing.assert_close(a.detach(), b)


def test_half_batches_with_the_total_token_count_add_up_to_the_full_batch(batch: dict[str, torch.Tensor]) -> None:
    total = int((batch["labels"] != -100).sum())
    full = losses_under_test(batch, 4)
    # One example each, like two micro-batches; slices of the same leaf, so the gradients meet there.
    first = losses_under_test({key: value[:1] for key, value in batch.items()}, 4, num_tokens=total)
    second = losses_under_test({key: value[1:] for key, value in batch.items()}, 4, num_tokens=total)
    for whole, a, b in zip(full, first, second, strict=True):
        (grad_whole,) = torch.autograd.grad(whole, batch["student"])
        (grad_sum,) = torch.autograd.grad(a + b, batch["student"])
        torch.testing.assert_close(a + b, whole, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_sum, grad_whole, rtol=1e-10, atol=1e-12)


# the combined loss, heads, vocabularies -----------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_loss_mixes_ce_and_t2_kd(batch: dict[str, torch.Tensor], temperature: float) -> None:
    student, labels = batch["student"], batch["labels"]
    out = distillation_loss(
        student, labels, batch["teacher"], kd_ratio=0.25, beta=0.5, temperature=temperature, chunk_tokens=4
    )
    ce = F.cross_entropy(student.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    kd = reference_dense(batch, 0.5, temperature)
    assert_same_value_and_grad(out.loss, 0.75 * ce + 0.25 * kd, student)
    torch.testing.assert_close(out.ce, ce.detach())
    torch.testing.assert_close(out.kd, kd.detach())
    assert out.num_tokens == len(kept_rows(batch))
    only_ce = distillation_loss(student, labels, batch["teacher"], kd_ratio=0.0)
    torch.testing.assert_close(only_ce.loss, ce)


def test_distillation_loss_with_a_sparse_teacher(batch: dict[str, torch.Tensor]) -> None:
    student, labels = batch["student"], batch["labels"]
    for tail in ("zero", "uniform", "renormalise"):
        teacher = TopKTeacher(batch["ids"], batch["logprobs"], tail)  # type: ignore[arg-type]
        out = distillation_loss(student, labels, teacher, kd_ratio=0.5, temperature=1.0, chunk_tokens=3)
        ce = F.cross_entropy(student.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
        assert_same_value_and_grad(out.loss, 0.5 * ce + 0.5 * reference_sparse(batch, tail, 0.0, 1.0), student)


def test_without_a_teacher_it_is_the_cross_entropy(batch: dict[str, torch.Tensor]) -> None:
    student, labels = batch["student"], batch["labels"]
    out = distillation_loss(student, labels, None, kd_ratio=0.0, chunk_tokens=5)
    ce = F.cross_entropy(student.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    assert_same_value_and_grad(out.loss, ce, student)
    assert float(out.kd) == 0
    with pytest.raises(ValueError, match="needs a teacher"):
        distillation_loss(student, labels, None, kd_ratio=0.5)


def test_hidden_states_with_heads_match_logits(batch: dict[str, torch.Tensor]) -> None:
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(B, T, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher_hidden = torch.randn(B, T, 7, generator=generator, dtype=torch.float64)
    head = torch.nn.Linear(5, V, bias=False, dtype=torch.float64)
    teacher_head = torch.nn.Linear(7, V, dtype=torch.float64)
    with torch.no_grad():
        teacher_logits = teacher_head(teacher_hidden)
    kwargs = {"kd_ratio": 0.6, "beta": 0.3, "temperature": 1.3, "chunk_tokens": 4}
    fused = distillation_loss(
        hidden, batch["labels"], teacher_hidden, student_head=head, teacher_head=teacher_head, **kwargs
    )
    plain = distillation_loss(head(hidden), batch["labels"], teacher_logits, **kwargs)
    grads_fused = torch.autograd.grad(fused.loss, [hidden, head.weight])
    grads_plain = torch.autograd.grad(plain.loss, [hidden, head.weight])
    torch.testing.assert_close(fused.loss, plain.loss)
    for a, b in zip(grads_fused, grads_plain, strict=True):
        torch.testing.assert_close(a, b)


def with_saved_shapes(compute: Callable[[], Any]) -> tuple[Any, set[tuple[int, ...]]]:
    """What ``compute`` returns, and the shapes of every tensor autograd saved for backward while it ran."""
    shapes: set[tuple[int, ...]] = set()

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        shapes.add(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        result = compute()
    return result, shapes


@pytest.mark.parametrize(("kd_ratio", "temperature", "bias"), [(1.0, 1.0, False), (0.6, 1.0, True), (0.6, 2.0, False)])
def test_forward_kl_through_linear_heads_has_the_autograd_gradient(
    batch: dict[str, torch.Tensor], kd_ratio: float, temperature: float, bias: bool
) -> None:
    """Forward KL with linear heads takes a path with its gradient written out: the same as autograd's."""
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(B, T, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher_hidden = torch.randn(B, T, 7, generator=generator, dtype=torch.float64)
    head = torch.nn.Linear(5, V, bias=bias, dtype=torch.float64)
    teacher_head = torch.nn.Linear(7, V + 2, dtype=torch.float64).requires_grad_(False)  # 2 logits more: cut
    with torch.no_grad():
        teacher_logits = teacher_head(teacher_hidden)[..., :V]
    kwargs = {"kd_ratio": kd_ratio, "temperature": temperature, "chunk_tokens": 4}
    fused, saved = with_saved_shapes(
        lambda: distillation_loss(
            hidden, batch["labels"], teacher_hidden, student_head=head, teacher_head=teacher_head, **kwargs
        )
    )
    # Written out, not taken by autograd: only the gradient buffers are saved, nothing chunk- or vocabulary-sized.
    assert saved == {(B * T, 5), *(tuple(param.shape) for param in head.parameters())}
    plain = distillation_loss(head(hidden), batch["labels"], teacher_logits, **kwargs)
    params = [hidden, *head.parameters()]
    for a, b in zip(torch.autograd.grad(fused.loss, params), torch.autograd.grad(plain.loss, params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for a, b in zip(fused[:3], plain[:3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(
            distillation_loss(
                hidden, batch["labels"], teacher_hidden, student_head=head, teacher_head=teacher_head, **kwargs
            ).loss,
            plain.loss.detach(),
        )


def test_forward_kl_through_linear_heads_under_bf16_autocast(batch: dict[str, torch.Tensor]) -> None:
    """The trainer's bf16 path: hidden states and heads under CPU autocast give the autograd loss and gradients."""
    generator = torch.Generator().manual_seed(4)
    hidden = torch.randn(B, T, 8, generator=generator).to(torch.bfloat16).requires_grad_()
    teacher_hidden = torch.randn(B, T, 8, generator=generator).to(torch.bfloat16)
    head, teacher_head = torch.nn.Linear(8, V, bias=False), torch.nn.Linear(8, V, bias=False).requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, saved = with_saved_shapes(
            lambda: distillation_loss(
                hidden, batch["labels"], teacher_hidden, student_head=head, teacher_head=teacher_head, chunk_tokens=4
            )
        )
        plain = distillation_loss(head(hidden), batch["labels"], teacher_head(teacher_hidden), chunk_tokens=4)
    params = [hidden, head.weight]
    fused_grads, plain_grads = torch.autograd.grad(fused.loss, params), torch.autograd.grad(plain.loss, params)
    assert saved == {(B * T, 8), (V, 8)}  # the fused path: only the gradient buffers
    assert fused_grads[0].dtype == torch.bfloat16 and fused_grads[1].dtype == torch.float32
    torch.testing.assert_close(fused.loss, plain.loss, rtol=1e-4, atol=1e-5)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=1e-3)


def test_a_padded_student_vocabulary_is_cut_to_the_teacher_one(batch: dict[str, torch.Tensor]) -> None:
    padded = torch.cat([batch["student"], torch.zeros(B, T, 3, dtype=torch.float64)], dim=-1)
    loss = generalised_jsd(padded, batch["teacher"], labels=batch["labels"])
    torch.testing.assert_close(loss, generalised_jsd(batch["student"], batch["teacher"], labels=batch["labels"]))


def test_bf16_logits_are_upcast_per_chunk(batch: dict[str, torch.Tensor]) -> None:
    student = batch["student"].detach().to(torch.bfloat16).requires_grad_()
    teacher = batch["teacher"].to(torch.bfloat16)
    loss = generalised_jsd(student, teacher, beta=0.5, labels=batch["labels"], chunk_tokens=4)
    loss.backward()
    assert loss.dtype == torch.float32 and student.grad is not None and student.grad.dtype == torch.bfloat16
    exact = generalised_jsd(student.detach().double(), teacher.double(), beta=0.5, labels=batch["labels"])
    assert loss.item() == pytest.approx(exact.item(), rel=1e-5)


def test_shift_labels_aligns_with_unshifted_logits() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, 7]])
    assert shift_labels(labels).tolist() == [[-100, 5, 6, 7, -100]]


def test_bad_arguments_are_refused(batch: dict[str, torch.Tensor]) -> None:
    student, teacher = batch["student"], batch["teacher"]
    for kwargs in ({"beta": 1.5}, {"temperature": 0.0}, {"chunk_tokens": 0}):
        with pytest.raises(ValueError):
            generalised_jsd(student, teacher, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tail"):
        sparse_generalised_jsd(student, batch["ids"], batch["logprobs"], tail="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows"):
        generalised_jsd(student, teacher[:1])


def test_no_fp32_vocabulary_sized_tensor_outlives_its_chunk() -> None:
    """Each chunk's fp32 tensors are freed once it is differentiated; the graph keeps only bf16 gradients."""
    generator = torch.Generator().manual_seed(2)
    n, vocab, chunk = 64, 1000, 16
    student = torch.randn(n, vocab, generator=generator).to(torch.bfloat16).requires_grad_()
    teacher = torch.randn(n, vocab, generator=generator).to(torch.bfloat16)
    ids = torch.randperm(vocab, generator=generator)[:K].repeat(n, 1)
    logprobs = torch.log_softmax(torch.randn(n, K, generator=generator), dim=-1) - 0.1
    labels = torch.randint(0, vocab, (n,), generator=generator)
    saved: list[weakref.ref[torch.Tensor]] = []

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(weakref.ref(tensor))
        return tensor

    for teacher_arg in (teacher, TopKTeacher(ids, logprobs, "uniform"), TopKTeacher(ids, logprobs, "renormalise")):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            out = distillation_loss(student, labels, teacher_arg, beta=0.5, temperature=2.0, chunk_tokens=chunk)
        gc.collect()
        alive = [tensor for ref in saved if (tensor := ref()) is not None]
        assert sum(t.numel() for t in alive if t.dtype == torch.float32) < vocab
        assert any(t.shape == student.shape for t in alive)  # the gradient buffer
        assert all(t.dtype == torch.bfloat16 for t in alive if t.numel() >= vocab)
        assert len(saved) > len(alive)  # the chunks' own tensors were saved, then freed
        out.loss.backward()
