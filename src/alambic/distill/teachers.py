"""Local teachers and what the trainer gets from a teacher for each batch: dense logits or stored top-k rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from alambic.distill.logits_store import LogitsStore, TopK, top_k_logprobs
from alambic.errors import AlambicError
from alambic.scoring import decoder_and_head
from alambic.scoring.batches import Batch, Example, make_batch
from alambic.scoring.losses import Head, Tail, TopKTeacher

Warn = Callable[[str], None]


def logits_width(model: Any) -> int:
    return int(decoder_and_head(model)[1].weight.shape[0])


def shared_width(
    teacher_vocab: dict[str, int],
    student_vocab: dict[str, int],
    teacher_width: int,
    student_width: int,
    *,
    teacher_name: str,
    method: str,
    warn: Warn,
) -> int:
    """How many logits teacher and student share; an error if their tokenizers are not the same vocabulary.

    Same family, different sizes (Qwen2.5 7B's 152064 logits vs 0.5B's 151936, or a tokenizer with a few more
    tokens at the end) is fine: both are cut to the smaller size.
    """
    if teacher_vocab != student_vocab:
        teacher_tokens = {i: token for token, i in teacher_vocab.items()}
        student_tokens = {i: token for token, i in student_vocab.items()}
        common = min(len(teacher_tokens), len(student_tokens))
        differing = sum(teacher_tokens.get(i) != student_tokens.get(i) for i in range(common))
        if differing:
            raise AlambicError(
                f"distill.method = '{method}' compares logits token by token, but the teacher ({teacher_name}) and "
                f"the student have different tokenizers ({differing} of their first {common} token ids differ); "
                "use distill.method = 'sft', which trains on the teacher's answers as text"
            )
    width = min(teacher_width, student_width)
    if (teacher_width, len(teacher_vocab)) != (student_width, len(student_vocab)):
        warn(
            f"the teacher has {teacher_width} logits ({len(teacher_vocab)} tokens) and the student {student_width} "
            f"({len(student_vocab)} tokens); the same family, so distillation uses the first {width}"
        )
    return width


# local teachers ------------------------------------------------------------------------------------------


class HFTeacher:
    """A transformers teacher, frozen: it scores the same packed batches as the student."""

    def __init__(self, path: Path, precision_bf16: bool, device: torch.device | str = "cpu") -> None:
        from alambic.models.hf import load_causal_lm, load_tokenizer

        self.device = torch.device(device)
        # Frozen: under bf16 autocast its matmuls run in bf16 anyway, so its weights need not take fp32 memory.
        dtype = torch.bfloat16 if precision_bf16 else torch.float32
        self.model = load_causal_lm(path, dtype).requires_grad_(False).to(self.device)
        self.vocab: dict[str, int] = load_tokenizer(path).get_vocab()
        self.width = logits_width(self.model)
        self.bf16 = precision_bf16
        self.decoder, self.head = decoder_and_head(self.model)

    @torch.no_grad()
    def hidden(self, batch: Batch) -> Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.decoder(**batch.to(self.device).model_inputs()).last_hidden_state

    @torch.no_grad()
    def top_k(self, examples: Sequence[Example], k: int, width: int, pad_id: int, capacity: int) -> list[TopK]:
        batch = make_batch(examples, pad_id, packing=True, capacity=capacity)
        hidden = self.hidden(batch).flatten(0, 1)
        result = []
        for index, example in enumerate(examples):
            rows = hidden[batch.answer_rows(index, example, len(example.answer_ids))]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.head(rows)[:, :width]
            result.append(top_k_logprobs(logits.cpu(), k))
        return result


class GGUFTeacher:
    """A GGUF teacher through llama.cpp, which keeps the logits of every position it evaluates."""

    def __init__(self, path: Path, n_ctx: int) -> None:
        import llama_cpp

        from alambic.models.llamacpp import load_llama

        self.path = path
        self.llama = load_llama(path, n_ctx, logits_all=True)
        vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
        texts = (llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8") for i in range(self.llama.n_vocab()))
        self.vocab = {text: i for i, text in enumerate(texts)}
        self.width = self.llama.n_vocab()

    def top_k(self, examples: Sequence[Example], k: int, width: int, pad_id: int, capacity: int) -> list[TopK]:
        from alambic.models.llamacpp import llama_cpp_failures

        result = []
        for example in examples:
            self.llama.reset()
            with llama_cpp_failures(f"{self.path}: llama.cpp could not score an example"):
                self.llama.eval(example.input_ids)
            start = example.answer_start
            rows = np.asarray(self.llama.scores[start : start + len(example.answer_ids), :width])
            result.append(top_k_logprobs(torch.from_numpy(rows.copy()), k))
        return result

    def close(self) -> None:
        self.llama.close()


# what the trainer asks of a teacher ----------------------------------------------------------------------


class TeacherSignal(Protocol):
    def for_batch(self, batch: Batch, indices: Sequence[int]) -> tuple[Tensor | TopKTeacher, Tensor, Head | None]:
        """For the student batch made of examples ``indices``: the teacher argument of `distillation_loss`, aligned
        with the batch's rows; a bool mask [R, L] of the rows it covers; the teacher's output layer, if the
        argument holds hidden states."""
        ...


class DenseTeacher:
    """A local teacher run on every batch. It may read other prompts than the student (its own, with the
    document chunk): only its rows for the answer tokens are used, moved to the student's answer rows."""

    def __init__(self, teacher: HFTeacher, examples: Sequence[Example], students: Sequence[Example], pad_id: int):
        self.teacher, self.examples, self.students, self.pad_id = teacher, examples, students, pad_id

    def for_batch(self, batch: Batch, indices: Sequence[int]) -> tuple[Tensor, Tensor, Head | None]:
        examples = [self.examples[i] for i in indices]
        own = make_batch(examples, self.pad_id, packing=True, capacity=max(len(e.input_ids) for e in examples))
        hidden = self.teacher.hidden(own).flatten(0, 1)
        aligned = hidden.new_zeros((batch.labels.numel(), hidden.shape[-1]))
        covered = torch.zeros(batch.labels.numel(), dtype=torch.bool)
        for position, index in enumerate(indices):
            count = min(len(self.students[index].answer_ids), len(self.examples[index].answer_ids))
            rows = batch.answer_rows(position, self.students[index], count)
            aligned[rows] = hidden[own.answer_rows(position, self.examples[index], count)]
            covered[rows] = True
        shape = batch.labels.shape
        return aligned.reshape(*shape, -1), covered.reshape(shape), self.teacher.head


class SparseTeacher:
    """Top-k rows from a logits store: row j of an example is the teacher's distribution for answer token j."""

    def __init__(self, store: LogitsStore, students: Sequence[Example], tail: Tail) -> None:
        self.store, self.students, self.tail = store, students, tail

    def for_batch(self, batch: Batch, indices: Sequence[int]) -> tuple[TopKTeacher, Tensor, Head | None]:
        k, size = self.store.k, batch.labels.numel()
        ids = torch.arange(k).expand(size, k).clone()
        logprobs = torch.full((size, k), -float(np.log(k)))
        covered = torch.zeros(size, dtype=torch.bool)
        for position, index in enumerate(indices):
            student = self.students[index]
            if student.key not in self.store:
                continue
            top = self.store.get(student.key)
            count = min(len(student.answer_ids), len(top.ids))
            rows = batch.answer_rows(position, student, count)
            ids[rows], logprobs[rows] = top.ids[:count], top.logprobs[:count]
            covered[rows] = True
        shape = batch.labels.shape
        return TopKTeacher(ids.reshape(*shape, k), logprobs.reshape(*shape, k), self.tail), covered.reshape(shape), None
