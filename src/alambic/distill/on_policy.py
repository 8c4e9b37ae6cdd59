"""On-policy distillation (GKD, Agarwal et al. 2024): a share of the steps train on the student's own answers.

On such a step the student answers the step's prompts itself, all at once (one batched `generate` with a KV
cache), and the teacher scores those answers: the student learns where its own samples lead, which fixes the
train/inference mismatch of learning only from the teacher's answers. The loss there is the divergence alone
(kd_ratio 1): cross-entropy on the student's own samples would only reinforce them. Which steps are on-policy,
and what is sampled, depend only on the seed and the step, so a resumed run samples the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alambic.config import DistillSection
from alambic.distill.teachers import DenseTeacher, HFTeacher
from alambic.scoring.batches import Example
from alambic.scoring.losses import IGNORE_INDEX

ON_POLICY_STREAM = 7_919  # keeps these draws apart from the data order's


class OnPolicy:
    def __init__(
        self,
        teacher: HFTeacher,
        students: Sequence[Example],
        teachers: Sequence[Example],
        settings: DistillSection,
        pad_id: int,
        eos_id: int,
    ) -> None:
        self.teacher, self.students, self.teachers = teacher, students, teachers
        self.settings, self.pad_id, self.eos_id = settings, pad_id, eos_id

    def _seed(self, step: int) -> int:
        return (self.settings.seed * 100_003 + ON_POLICY_STREAM) * 1_000_003 + step

    def applies(self, step: int) -> bool:
        draw = torch.rand((), generator=torch.Generator().manual_seed(self._seed(step)))
        return bool(draw < self.settings.gkd_lambda)

    @torch.no_grad()
    def sample(self, model: Any, indices: Sequence[int], step: int) -> tuple[list[Example], DenseTeacher]:
        """The step's prompts answered by the student, and the teacher that scores those answers."""
        prompts = [self.students[i].input_ids[: self.students[i].answer_start + 1] for i in indices]
        answers = self._generate(model, prompts, step)
        students, teachers = [], []
        for index, prompt, answer in zip(indices, prompts, answers, strict=True):
            teacher = self.teachers[index]
            students.append(_answered(prompt, answer, self.settings.max_seq_len, self.students[index].key))
            own_prompt = teacher.input_ids[: teacher.answer_start + 1]
            teachers.append(_answered(own_prompt, answer, len(own_prompt) + len(answer), teacher.key))
        return students, DenseTeacher(self.teacher, teachers, students, self.pad_id)

    def _generate(self, model: Any, prompts: list[list[int]], step: int) -> list[list[int]]:
        width = max(len(prompt) for prompt in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every answer starts at column `width`
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        device = next(model.parameters()).device
        bf16 = torch.autocast(device.type, torch.bfloat16, enabled=self.teacher.bf16)
        with torch.random.fork_rng(devices=[]), bf16:
            torch.manual_seed(self._seed(step))
            output = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=self.settings.gkd_max_new_tokens,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
            )
        answers = []
        for row in output[:, width:].tolist():
            end = row.index(self.eos_id) + 1 if self.eos_id in row else len(row)
            answers.append(row[:end])
        return answers


def _answered(prompt: list[int], answer: list[int], max_len: int, key: str) -> Example:
    ids = [*prompt, *answer][:max_len]
    labels = [*([IGNORE_INDEX] * len(prompt)), *answer][:max_len]
    return Example(ids, labels, key)
