"""Token-level distillation losses for causal LMs, computed a chunk of tokens at a time.

Conventions shared by every loss here:

- **Rows are aligned.** Row i of the student logits (and of the teacher) is the distribution of the token
  whose label is ``labels[i]``. For a causal LM keep the logits as the model returns them and shift the labels
  instead (`shift_labels`): the logits then view as ``[N, V]`` without a copy.
- **Masking.** Rows whose label is ``ignore_index`` are left out of every term.
- **Reduction.** Each term is a sum over the kept rows divided by ``num_tokens``. The default is the number of
  rows kept in this call. Under gradient accumulation (or data parallelism), pass the kept-row count of the
  whole accumulated batch, over all micro-batches and ranks. The micro-batch losses then add up to the loss of
  the full batch. TRL had this bug (#4719).
- **Memory.** The rows are processed ``chunk_tokens`` at a time. Each chunk is upcast to fp32 and
  differentiated at once, during the forward pass, and then freed. So no fp32 ``[N, V]`` tensor exists at any
  time, neither for the student nor for the teacher, and none is kept for backward. The only full-size tensors
  are the inputs and the gradient of the student logits, both in the input dtype. Passing hidden states with
  ``student_head`` (and ``teacher_head``) goes one step further: then not even the logits exist in full. The
  price: no double backward, and the gradient is computed in the forward pass even if backward never runs. It
  is not computed under ``torch.no_grad()``, or when nothing requires grad. Forward KL (with CE) through a
  plain linear student head, the common case, has its gradient written out rather than taken by autograd:
  a chunk then holds two fp32 vocabulary-wide tensors instead of about six (`_FusedForwardKL`).
- **Temperature.** Both distributions are taken at temperature T (logits / T). The divergence is multiplied by
  T², so gradient magnitudes do not depend on T (Hinton et al.). The T² is part of the returned value. TRL's
  GKD accepts a temperature but never applies it in its loss.

The generalised Jensen-Shannon divergence between teacher P and student Q, with the mixture M = βP + (1-β)Q::

    β = 0:      KL(P ‖ Q) = Σ p log(p/q)                 forward KL, mass-covering (classic KD)
    β = 1:      KL(Q ‖ P) = Σ q log(q/p)                 reverse KL, mode-seeking (MiniLLM, on-policy)
    0 < β < 1:  β KL(P ‖ M) + (1-β) KL(Q ‖ M)            generalised JSD(β); β = 0.5 is the usual JSD

This is Eq. 1 of Agarwal et al. (2024, "On-Policy Distillation of Language Models"), with P the teacher and
Q the student. It is also exactly TRL's ``GKDTrainer.generalized_jsd_loss``: there beta=0 is forward KL and
beta=1 is reverse KL, with the same mixture. Note that JSD(β) → 0 as β → 0 or 1: near β = 0 it behaves
like β·KL(P‖Q), and near β = 1 like (1-β)·KL(Q‖P). So the endpoints are the plain KLs, not limits, and the
loss scale jumps there. Do not compare loss values across β.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
DEFAULT_CHUNK_TOKENS = 512
# Under the uniform tail the mass outside the top-k is floored at this value, so the teacher keeps some
# mass everywhere. Quantised or rounded top-k log-probs can otherwise sum to slightly more than 1.
MIN_TAIL_MASS = 1e-6

Tail = Literal["zero", "uniform", "renormalise"]
TAILS: tuple[Tail, ...] = ("zero", "uniform", "renormalise")
Head = torch.nn.Module  # e.g. model.lm_head: maps hidden states [n, H] to logits [n, V]


@dataclass(frozen=True)
class TopKTeacher:
    """A sparse teacher: its top-k token ids and their log-probs, per row. The maths is in `sparse_generalised_jsd`.

    ``ids [..., k]`` are integers, distinct within a row. ``logprobs [..., k]`` are log-probs at temperature 1 over
    the full vocabulary, as a ``top_logprobs`` API or `alambic.distill.logits_store` gives them (a store's row t
    has the same alignment as the logits).
    """

    ids: Tensor
    logprobs: Tensor
    tail: Tail


class DistillationLoss(NamedTuple):
    loss: Tensor  # (1 - kd_ratio)·ce + kd_ratio·kd: the one to backpropagate
    ce: Tensor  # cross-entropy on the labels at temperature 1 (detached)
    kd: Tensor  # T²·D, the divergence term (detached)
    num_tokens: float  # the normaliser used


def shift_labels(labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Labels aligned with unshifted causal-LM logits: position t gets the label of t + 1, the last one is ignored."""
    shifted = torch.full_like(labels, ignore_index)
    shifted[..., :-1] = labels[..., 1:]
    return shifted


def generalised_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 0.0,
    temperature: float = 1.0,
    labels: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    num_tokens: int | float | Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    student_head: Head | None = None,
    teacher_head: Head | None = None,
) -> Tensor:
    """T²·D_β(teacher ‖ student) between dense logits ``[..., V]``, summed over the kept rows / ``num_tokens``.

    With ``student_head`` (``teacher_head``), the first argument holds final hidden states ``[..., H]``. The head
    (e.g. ``model.lm_head``) maps each chunk to logits. If the vocabularies differ (padded embedding tables), both
    sides are cut to the smaller one; the student's extra logits get no KD signal.
    """
    _check(beta, temperature, chunk_tokens)
    rows, mask = _flatten(student_logits, labels, ignore_index)
    teacher = _flatten_dense(teacher_logits, rows.shape[0])
    chunk = _dense_chunk(beta, temperature, student_head, teacher_head, with_ce=False)
    scale = temperature**2 / _normaliser(num_tokens, mask, rows)
    loss, _ = _chunked_loss(chunk, rows, [teacher], mask, chunk_tokens, [scale], [student_head, teacher_head])
    return loss


def sparse_generalised_jsd(
    student_logits: Tensor,
    teacher_ids: Tensor,
    teacher_logprobs: Tensor,
    *,
    tail: Tail,
    beta: float = 0.0,
    temperature: float = 1.0,
    labels: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    num_tokens: int | float | Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    student_head: Head | None = None,
) -> Tensor:
    """T²·D_β(teacher ‖ student) for a teacher known by its top-k only, summed over kept rows / ``num_tokens``.

    Per row: S is the set of the k teacher ids, ℓ_i (i ∈ S) the teacher's log-probs at temperature 1 over the full
    vocabulary, m = Σ_S exp(ℓ_i) the teacher's top-k mass, V the student's vocabulary size, τ the temperature,
    and log q = log_softmax(student_logits / τ) over all V tokens. The temperature is applied to ℓ as if ℓ were
    logits (p ∝ exp(ℓ/τ)). How much mass the top-k gets after that depends on the tail mode:

    ``zero``: the tail is ignored, and the top-k keeps its mass m::

        p_i = m · softmax_S(ℓ/τ)_i      (at τ = 1: p_i = exp(ℓ_i), the probabilities as given)
        D   = Σ_{i∈S} p_i (log p_i − log q_i)

      This is the forward KL with the tail's terms dropped. It is not a divergence: it can be negative (down to
      m log m). Its minimum is q = p/m on S and q = 0 outside S, so it pulls the student's mass into the top-k.
      Only β = 0 is allowed. Reverse KL and JSD need p > 0 wherever q > 0; with a zero tail reverse KL is
      infinite, and JSD would compare the student with a teacher that does not sum to 1. They raise ValueError.

    ``uniform``: the missing mass 1 − m (floored at ``MIN_TAIL_MASS``) is spread evenly over the V − k other
    tokens. That rebuilds a full teacher distribution at τ = 1, with log-prob ℓ_i on S and
    log u = log((1 − m)/(V − k)) elsewhere. The temperature then applies to that whole distribution::

        p = softmax(ℓ̃/τ) over all V tokens, with ℓ̃ = ℓ on S and log u outside S
        D = D_β(p ‖ q) over all V tokens                                 (any β)

      For τ > 1 the tail's share grows, as it would for a real flat tail.

    ``renormalise``: teacher and student are both restricted to S and renormalised::

        p̂ = softmax_S(ℓ/τ),   q̂ = softmax_S(s_S/τ)   (s_S: the student's logits at the ids in S)
        D = D_β(p̂ ‖ q̂) over the k tokens of S                            (any β)

      The temperature is exact here: ℓ differs from the teacher's logits by a per-row constant, so softmax_S(ℓ/τ)
      is the teacher's tempered distribution conditioned on S. The student gets no signal about the mass it puts
      outside S; only the CE term sees it.

    Teacher ids must be distinct within a row and smaller than V. Padding rows must be masked by ``labels``.
    """
    _check(beta, temperature, chunk_tokens)
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, not {tail!r}")
    if tail == "zero" and beta != 0:
        raise ValueError(
            "the zero tail gives the teacher no mass outside its top-k: reverse KL is infinite and JSD compares "
            "with a teacher that does not sum to 1. Use beta=0 (forward KL), or tail='uniform' or 'renormalise'"
        )
    rows, mask = _flatten(student_logits, labels, ignore_index)
    ids, logprobs = _flatten_topk(teacher_ids, teacher_logprobs, rows.shape[0])
    chunk = _sparse_chunk(tail, beta, temperature, student_head, with_ce=False)
    scale = temperature**2 / _normaliser(num_tokens, mask, rows)
    loss, _ = _chunked_loss(chunk, rows, [ids, logprobs], mask, chunk_tokens, [scale], [student_head])
    return loss


def distillation_loss(
    student_logits: Tensor,
    labels: Tensor,
    teacher: Tensor | TopKTeacher | None,
    *,
    kd_ratio: float = 0.5,
    beta: float = 0.0,
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    num_tokens: int | float | Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    student_head: Head | None = None,
    teacher_head: Head | None = None,
) -> DistillationLoss:
    """(1 − kd_ratio)·CE + kd_ratio·T²·D in one chunked pass. D is `generalised_jsd` or `sparse_generalised_jsd`.

    ``teacher`` holds dense teacher logits (or hidden states, with ``teacher_head``) or a `TopKTeacher`; None (with
    kd_ratio 0) gives CE alone. CE is taken on the labels at temperature 1 over the student's full vocabulary. Both
    terms share one normaliser.
    """
    _check(beta, temperature, chunk_tokens)
    if not 0.0 <= kd_ratio <= 1.0:
        raise ValueError(f"kd_ratio must be in [0, 1], not {kd_ratio}")
    rows, mask = _flatten(student_logits, labels, ignore_index)
    targets = labels.reshape(-1)
    with_kd = kd_ratio > 0
    if teacher is None:
        if with_kd:
            raise ValueError("kd_ratio > 0 needs a teacher")
        chunk, extras = _ce_chunk(student_head), [targets]
    elif isinstance(teacher, TopKTeacher):
        if teacher.tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}, not {teacher.tail!r}")
        if teacher.tail == "zero" and beta != 0 and with_kd:
            raise ValueError("the zero tail supports only beta=0 (forward KL); see sparse_generalised_jsd")
        ids, logprobs = _flatten_topk(teacher.ids, teacher.logprobs, rows.shape[0])
        chunk = _sparse_chunk(teacher.tail, beta, temperature, student_head, with_ce=True, with_kd=with_kd)
        extras = [ids, logprobs, targets]
    else:
        dense = _flatten_dense(teacher, rows.shape[0])
        extras = [dense, targets]
        if _fusable(beta, student_head, teacher_head, dense):
            chunk = _FusedForwardKL(student_head, teacher_head, temperature)
        else:
            chunk = _dense_chunk(beta, temperature, student_head, teacher_head, with_ce=True, with_kd=with_kd)
    normaliser = _normaliser(num_tokens, mask, rows)
    weights = [(1 - kd_ratio) / normaliser, kd_ratio * temperature**2 / normaliser]
    loss, (ce, kd) = _chunked_loss(chunk, rows, extras, mask, chunk_tokens, weights, [student_head, teacher_head])
    return DistillationLoss(loss, ce / normaliser, temperature**2 * kd / normaliser, float(normaliser))


# divergences on fp32 log-probs, one value per row ------------------------------------------------


def _kl(p_log: Tensor, q_log: Tensor) -> Tensor:
    """KL(p ‖ q) per row, with 0·log 0 = 0 (and no NaN gradient where p = 0)."""
    p = p_log.exp()
    return (p * torch.where(p > 0, p_log - q_log, 0.0)).sum(-1)


def _divergence_sum(student_log: Tensor, teacher_log: Tensor, beta: float) -> Tensor:
    """Σ over rows of D_β(teacher ‖ student). Under forward KL, ``teacher_log`` may be changed in place."""
    if beta == 0:
        return _forward_kl_sum(teacher_log, student_log)
    return _gjsd(student_log, teacher_log, beta).sum()


def _forward_kl_sum(teacher_log: Tensor, student_log: Tensor) -> Tensor:
    """Σ p (log p − log q) as p·log p − p·log q: two dot products, so that autograd keeps no vocabulary-wide
    product and the teacher's side is never differentiated. log p is floored in place, to get 0·log 0 = 0."""
    with torch.no_grad():
        teacher_log.clamp_(min=torch.finfo(teacher_log.dtype).min)
        p = teacher_log.exp().flatten()
        self_term = torch.dot(p, teacher_log.flatten())
    return self_term - torch.dot(p, student_log.flatten())


def _gjsd(student_log: Tensor, teacher_log: Tensor, beta: float) -> Tensor:
    if beta == 0:
        return _kl(teacher_log, student_log)
    if beta == 1:
        return _kl(student_log, teacher_log)
    mixture = torch.logaddexp(teacher_log + math.log(beta), student_log + math.log1p(-beta))
    return beta * _kl(teacher_log, mixture) + (1 - beta) * _kl(student_log, mixture)


# per-chunk computations (each returns the (ce, kd) sums of its rows) ------------------------------

ChunkFn = Callable[..., tuple[Tensor, ...]]


def _upcast(x: Tensor) -> Tensor:
    """At least fp32 (bf16/fp16 chunks go to fp32; fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _tempered_log_softmax(logits: Tensor, temperature: float) -> Tensor:
    return torch.log_softmax(logits if temperature == 1 else logits / temperature, dim=-1)


def _logits(x: Tensor, head: Head | None) -> Tensor:
    return _upcast(x if head is None else head(x))


def _cross_entropy(logits: Tensor, targets: Tensor, log_probs: Tensor | None) -> Tensor:
    if log_probs is not None:  # already have log_softmax(logits): reuse it
        return -log_probs.gather(1, targets[:, None]).sum()
    return F.cross_entropy(logits, targets, reduction="sum")


def _ce_chunk(student_head: Head | None) -> ChunkFn:
    def chunk(student: Tensor, targets: Tensor) -> tuple[Tensor, ...]:
        logits = _logits(student, student_head)
        return _cross_entropy(logits, targets, None), logits.new_zeros(())

    return chunk


def _dense_chunk(
    beta: float,
    temperature: float,
    student_head: Head | None,
    teacher_head: Head | None,
    *,
    with_ce: bool,
    with_kd: bool = True,
) -> ChunkFn:
    def chunk(student: Tensor, teacher: Tensor, targets: Tensor | None = None) -> tuple[Tensor, ...]:
        logits = _logits(student, student_head)
        zero = logits.new_zeros(())
        kd, full_log = zero, None
        if with_kd:
            with torch.no_grad():
                teacher_logits = _logits(teacher, teacher_head)
                vocab = min(logits.shape[-1], teacher_logits.shape[-1])
                teacher_log = _tempered_log_softmax(teacher_logits[:, :vocab], temperature)
                del teacher_logits
            student_log = _tempered_log_softmax(logits[:, :vocab], temperature)
            kd = _divergence_sum(student_log, teacher_log, beta)
            if temperature == 1 and vocab == logits.shape[-1]:
                full_log = student_log
        if not with_ce:
            return (kd,)
        assert targets is not None
        return _cross_entropy(logits, targets, full_log), kd

    return chunk


def _sparse_chunk(
    tail: Tail, beta: float, temperature: float, student_head: Head | None, *, with_ce: bool, with_kd: bool = True
) -> ChunkFn:
    def chunk(student: Tensor, ids: Tensor, logprobs: Tensor, targets: Tensor | None = None) -> tuple[Tensor, ...]:
        logits = _logits(student, student_head)
        teacher = _upcast(logprobs)
        kd, full_log = logits.new_zeros(()), None
        if with_kd and tail == "renormalise":
            student_log = torch.log_softmax(logits.gather(1, ids) / temperature, dim=-1)
            kd = _gjsd(student_log, torch.log_softmax(teacher / temperature, dim=-1), beta).sum()
        elif with_kd:
            student_full = _tempered_log_softmax(logits, temperature)
            full_log = student_full if temperature == 1 else None
            if tail == "zero":
                kept = torch.logsumexp(teacher, dim=-1, keepdim=True)  # log m
                teacher_log = kept + torch.log_softmax(teacher / temperature, dim=-1)
                kd = _kl(teacher_log, student_full.gather(1, ids)).sum()
            else:
                with torch.no_grad():
                    teacher_full = _uniform_tail(teacher, ids, logits.shape[-1], temperature)
                kd = _divergence_sum(student_full, teacher_full, beta)
        if not with_ce:
            return (kd,)
        assert targets is not None
        return _cross_entropy(logits, targets, full_log), kd

    return chunk


def _uniform_tail(logprobs: Tensor, ids: Tensor, vocab: int, temperature: float) -> Tensor:
    """Full-vocabulary tempered teacher log-probs: top-k as given, the rest of the mass spread evenly."""
    others = vocab - ids.shape[-1]
    if others > 0:
        missing = (-torch.expm1(torch.logsumexp(logprobs, dim=-1, keepdim=True))).clamp_min(MIN_TAIL_MASS)
        each = missing.log() - math.log(others)
    else:
        each = logprobs.new_full((logprobs.shape[0], 1), -math.inf)
    dense = (each / temperature).expand(-1, vocab).contiguous()
    dense.scatter_(1, ids, logprobs / temperature)
    return torch.log_softmax(dense, dim=-1)


# forward KL + CE through a linear head, with the gradient written out --------------------------------


def _fusable(beta: float, student_head: Head | None, teacher_head: Head | None, teacher: Tensor) -> bool:
    """Whether `_FusedForwardKL` computes this loss: forward KL, a plain linear student head, a frozen teacher
    with at least the student's logits."""
    if beta != 0 or type(student_head) is not torch.nn.Linear or teacher.requires_grad:
        return False
    if teacher_head is None:
        return teacher.shape[-1] >= student_head.out_features
    frozen = not any(param.requires_grad for param in teacher_head.parameters())
    return frozen and getattr(teacher_head, "out_features", 0) >= student_head.out_features


class _FusedForwardKL:
    """(CE, KL(p ‖ q)) of a chunk and their gradient, with q = softmax(head(h)/T), without autograd.

    For z = head(h): d/dz [w_ce·CE + w_kd·KL] = w_ce·(softmax(z) − onehot(y)) + (w_kd/T)·(q − p). It is built in
    place in the logits' own buffer, and the head's weight gradient is added into its buffer by one addmm. So a
    chunk holds two vocabulary-wide fp32 tensors (the student's logits, the teacher's p) where autograd holds
    six, and it makes fewer passes over them.
    """

    def __init__(self, head: torch.nn.Linear, teacher_head: Head | None, temperature: float) -> None:
        self.head, self.teacher_head, self.temperature = head, teacher_head, temperature

    def __call__(self, rows: Tensor, teacher: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return self._terms(rows, teacher, targets)[:2]

    def differentiate(
        self, args: list[Tensor], weights: list[float | Tensor], param_grads: list[Tensor], rows_grad: bool
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """The sums, and the gradient of Σ weights·sums in the rows (if ``rows_grad``); the head's parameters'
        gradients are added to ``param_grads``."""
        rows, teacher, targets = args
        with torch.no_grad():
            ce, kd, logits, p, lse = self._terms(rows, teacher, targets)
            w_ce, w_kd = (float(weight) for weight in weights)
            grad = self._logits_grad(logits, p, lse, targets, w_ce, w_kd)
            del p
            trained = [param for param in self.head.parameters() if param.requires_grad]
            for buffer, param in zip(param_grads, trained, strict=True):
                if param is self.head.weight:
                    buffer.addmm_(grad.t(), rows.to(buffer.dtype))
                else:
                    buffer.add_(grad.sum(0))
            # Under autocast the matmul comes out in bf16; the rows' gradient buffer has the rows' dtype.
            grad_in_rows = (grad @ self.head.weight.to(grad.dtype)).to(rows.dtype) if rows_grad else None
        return [ce, kd], [grad_in_rows]

    def _terms(self, rows: Tensor, teacher: Tensor, targets: Tensor) -> tuple[Tensor, ...]:
        tau = self.temperature
        teacher_logits = _logits(teacher, self.teacher_head)[:, : self.head.out_features]
        teacher_log = _tempered_log_softmax(teacher_logits, tau)
        del teacher_logits
        teacher_log.clamp_(min=torch.finfo(teacher_log.dtype).min)  # 0·log 0 = 0 below
        p = teacher_log.exp()
        self_term = torch.dot(p.flatten(), teacher_log.flatten())
        del teacher_log
        logits = _logits(rows, self.head)
        lse = torch.logsumexp(logits if tau == 1 else logits / tau, dim=-1)
        cross = torch.dot(p.flatten(), logits.flatten()) / tau - lse.sum()  # Σ p·log q, as Σ p = 1 per row
        lse_one = lse if tau == 1 else torch.logsumexp(logits, dim=-1)
        ce = (lse_one - logits.gather(1, targets[:, None]).squeeze(1)).sum()
        return ce, self_term - cross, logits, p, lse

    def _logits_grad(self, logits: Tensor, p: Tensor, lse: Tensor, targets: Tensor, w_ce: float, w_kd: float) -> Tensor:
        tau = self.temperature
        if tau == 1:
            grad = logits.sub_(lse[:, None]).exp_().mul_(w_ce + w_kd)
        else:
            tempered = (logits / tau).sub_(lse[:, None]).exp_().mul_(w_kd / tau)
            grad = logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True)).exp_().mul_(w_ce).add_(tempered)
            del tempered
        grad.sub_(p, alpha=w_kd / tau)
        rows = torch.arange(len(targets), device=targets.device)
        grad.index_put_((rows, targets), grad.new_full((len(targets),), -w_ce), accumulate=True)
        return grad


# chunking --------------------------------------------------------------------------------------


def _chunked_loss(
    chunk: ChunkFn | _FusedForwardKL,
    rows: Tensor,
    extras: list[Tensor],
    mask: Tensor | None,
    chunk_tokens: int,
    weights: list[float | Tensor],
    heads: list[Head | None],
) -> tuple[Tensor, list[Tensor]]:
    """Σ_j weights[j]·sums[j], where ``chunk`` gives the sums of ``chunk_tokens`` rows at a time, and the sums.

    When a gradient is wanted, each chunk is differentiated as soon as it is computed. Its input gradients go
    into buffers of the inputs' shape and dtype, and its fp32 intermediates are freed before the next chunk.
    Backward then only scales those buffers. This costs one forward and one backward per chunk, where
    activation checkpointing would pay for a second forward. The kept rows are selected inside each chunk, so
    every copy is chunk-sized. The returned sums are detached.
    """
    inputs = [rows, *extras]
    differentiable = [i for i, tensor in enumerate(inputs) if tensor.requires_grad]
    params = [p for head in heads if head is not None for p in head.parameters() if p.requires_grad]
    track = torch.is_grad_enabled() and bool(differentiable or params)
    plain = [tensor.detach() for tensor in inputs]
    input_grads = [torch.zeros_like(plain[i]) for i in differentiable] if track else []
    param_grads = [torch.zeros_like(p) for p in params] if track else []
    counts = _kept_per_chunk(mask, rows.shape[0], chunk_tokens)
    sums: list[Tensor] | None = None
    for index, kept in enumerate(counts):
        if kept == 0:
            continue
        start = index * chunk_tokens
        end = min(start + chunk_tokens, rows.shape[0])
        selected = None if mask is None or kept == end - start else mask[start:end].nonzero().squeeze(1)
        args = [
            tensor[start:end] if selected is None else tensor[start:end].index_select(0, selected) for tensor in plain
        ]
        if track:
            if isinstance(chunk, _FusedForwardKL):
                outputs, grads = chunk.differentiate(args, weights, param_grads, 0 in differentiable)
            else:
                outputs, grads = _autograd_chunk(chunk, args, differentiable, params, weights, param_grads)
            for buffer, grad in zip(input_grads, grads, strict=False):
                if grad is None:
                    continue
                if selected is None:
                    buffer[start:end].copy_(grad)
                else:
                    buffer[start:end].index_copy_(0, selected, grad)
        else:
            outputs = chunk(*args)
        outputs = [out.detach() for out in outputs]
        sums = outputs if sums is None else [a + b for a, b in zip(sums, outputs, strict=True)]
    if sums is None:  # nothing kept
        sums = [_upcast(plain[0][:0]).sum() for _ in weights]
    value = sum((weight * total for weight, total in zip(weights, sums, strict=True)), sums[0].new_zeros(()))
    if not track:
        return value, sums
    tracked = [inputs[i] for i in differentiable] + params
    return _PrecomputedGrad.apply(value, len(tracked), *tracked, *input_grads, *param_grads), sums


def _autograd_chunk(
    chunk: ChunkFn,
    args: list[Tensor],
    differentiable: list[int],
    params: list[Tensor],
    weights: list[float | Tensor],
    param_grads: list[Tensor],
) -> tuple[list[Tensor], tuple[Tensor | None, ...]]:
    """The chunk's sums and their gradients in its differentiable inputs; the parameters' go into ``param_grads``."""
    leaves = [arg.requires_grad_(i in differentiable) for i, arg in enumerate(args)]
    with torch.enable_grad():
        outputs = chunk(*leaves)
        total = sum((weight * out for weight, out in zip(weights, outputs, strict=True)), outputs[0].new_zeros(()))
    grads = torch.autograd.grad(total, [leaves[i] for i in differentiable] + params, allow_unused=True)
    for buffer, grad in zip(param_grads, grads[len(differentiable) :], strict=True):
        if grad is not None:
            buffer.add_(grad)
    return list(outputs), grads[: len(differentiable)]


class _PrecomputedGrad(torch.autograd.Function):
    """Returns ``value``; its gradient in each tracked tensor is the matching precomputed buffer."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, count: int, *tensors_then_grads: Tensor) -> Tensor:
        ctx.save_for_backward(*tensors_then_grads[count:])
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        # Scaled in place: no copy of the head's weight gradient. A second backward through the same graph is
        # refused by autograd's check on saved tensors changed in place, rather than scaling twice.
        grads = [grad.mul_(grad_output) for grad in ctx.saved_tensors]
        return None, None, *grads, *(None for _ in grads)


def _kept_per_chunk(mask: Tensor | None, n_rows: int, chunk_tokens: int) -> list[int]:
    if mask is None:
        return [min(chunk_tokens, n_rows - start) for start in range(0, n_rows, chunk_tokens)]
    return [int(count) for count in torch.stack([part.sum() for part in mask.split(chunk_tokens)]).tolist()]


# argument handling -----------------------------------------------------------------------------


def _check(beta: float, temperature: float, chunk_tokens: int) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], not {beta}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, not {chunk_tokens}")


def _flatten(student: Tensor, labels: Tensor | None, ignore_index: int) -> tuple[Tensor, Tensor | None]:
    rows = student.reshape(-1, student.shape[-1])
    if labels is None:
        return rows, None
    mask = labels.reshape(-1) != ignore_index
    if mask.shape[0] != rows.shape[0]:
        raise ValueError(f"labels give {mask.shape[0]} rows, the student {rows.shape[0]}")
    return rows, mask


def _flatten_dense(teacher: Tensor, n_rows: int) -> Tensor:
    rows = teacher.reshape(-1, teacher.shape[-1])
    if rows.shape[0] != n_rows:
        raise ValueError(f"the teacher gives {rows.shape[0]} rows, the student {n_rows}")
    return rows


def _flatten_topk(ids: Tensor, logprobs: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    if ids.shape != logprobs.shape:
        raise ValueError(f"teacher ids {tuple(ids.shape)} and logprobs {tuple(logprobs.shape)} differ in shape")
    k = ids.shape[-1]
    ids, logprobs = ids.reshape(-1, k).long(), logprobs.reshape(-1, k)
    if ids.shape[0] != n_rows:
        raise ValueError(f"the teacher gives {ids.shape[0]} rows, the student {n_rows}")
    return ids, logprobs


def _normaliser(num_tokens: int | float | Tensor | None, mask: Tensor | None, rows: Tensor) -> float | Tensor:
    if num_tokens is not None:
        if not isinstance(num_tokens, Tensor) and num_tokens <= 0:
            raise ValueError(f"num_tokens must be positive, not {num_tokens}")
        return num_tokens
    kept = rows.shape[0] if mask is None else int(mask.sum())
    return max(kept, 1)
