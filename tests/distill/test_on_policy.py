"""gkd: the student's own answers, sampled in one batched generate with a KV cache, reproducible per step."""

from __future__ import annotations

from pathlib import Path

import pytest

from alambic.config import DistillSection
from alambic.distill.on_policy import OnPolicy
from alambic.distill.teachers import HFTeacher
from alambic.models.hf import load_causal_lm, load_tokenizer
from alambic.scoring.batches import Example, encode

QUESTIONS = ["When do you roast?", "Do you ship to Egypt?", "Which grind for a moka pot, please?"]


def conversation(system: str, question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "We will tell you soon."},
    ]


@pytest.fixture(scope="module")
def on_policy(tiny_model_dir: Path) -> OnPolicy:
    tokenizer = load_tokenizer(tiny_model_dir)
    students = [encode(tokenizer, conversation("Be brief.", q), 128, key=q) for q in QUESTIONS]
    teachers = [encode(tokenizer, conversation("Reference: we roast on Tuesdays.", q), 128, key=q) for q in QUESTIONS]
    settings = DistillSection(method="gkd", gkd_lambda=0.3, gkd_max_new_tokens=6, precision="fp32")
    return OnPolicy(HFTeacher(tiny_model_dir, False), students, teachers, settings, 2, 2)


def test_samples_come_from_one_batched_generate_with_a_kv_cache(on_policy: OnPolicy, tiny_model_dir: Path) -> None:
    model = load_causal_lm(tiny_model_dir)
    calls: list[tuple[int, int]] = []
    model.model.register_forward_hook(lambda module, args, output: calls.append(tuple(output[0].shape[:2])))
    students, teacher = on_policy.sample(model, [0, 1, 2], step=3)
    prompt_width = max(s.answer_start + 1 for s in on_policy.students)
    assert calls[0] == (3, prompt_width) and all(call == (3, 1) for call in calls[1:])  # one new token per call
    assert 1 <= len(calls) <= 6
    for index, sampled in enumerate(students):
        original, own = on_policy.students[index], teacher.examples[index]
        prompt = original.input_ids[: original.answer_start + 1]
        answer = sampled.input_ids[len(prompt) :]
        assert sampled.input_ids[: len(prompt)] == prompt and sampled.answer_ids == answer and 1 <= len(answer) <= 6
        assert own.answer_ids == answer and own.input_ids[: own.answer_start + 1] != prompt  # the teacher's prompt

    again, _ = on_policy.sample(model, [0, 1, 2], step=3)
    other, _ = on_policy.sample(model, [0, 1, 2], step=4)
    assert [e.input_ids for e in again] == [e.input_ids for e in students]
    assert [e.input_ids for e in other] != [e.input_ids for e in students]


def test_about_lambda_of_the_steps_are_on_policy(on_policy: OnPolicy) -> None:
    share = sum(on_policy.applies(step) for step in range(400)) / 400
    assert share == pytest.approx(0.3, abs=0.07)
    assert [on_policy.applies(s) for s in range(50)] == [on_policy.applies(s) for s in range(50)]
    examples: list[Example] = on_policy.students
    never = OnPolicy(on_policy.teacher, examples, examples, DistillSection(gkd_lambda=0.0), 2, 2)
    always = OnPolicy(on_policy.teacher, examples, examples, DistillSection(gkd_lambda=1.0), 2, 2)
    assert not any(never.applies(s) for s in range(50)) and all(always.applies(s) for s in range(50))
