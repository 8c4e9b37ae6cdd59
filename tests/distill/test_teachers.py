"""Teachers: vocabularies compared token by token, padded logits sliced, local top-k aligned with the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from alambic.config import DistillSection
from alambic.distill.teachers import DenseTeacher, GGUFTeacher, HFTeacher, shared_width
from alambic.distill.train import batch_loss
from alambic.errors import AlambicError
from alambic.models.embedded import embedded_gguf, embedded_hf_dir, minilm_dir
from alambic.models.hf import load_causal_lm, load_tokenizer
from alambic.scoring import decoder_and_head
from alambic.scoring.batches import Example, encode, labelled_tokens, make_batch
from alambic.scoring.losses import generalised_jsd

MESSAGES = [
    {"role": "system", "content": "You are the support assistant of a coffee roastery."},
    {"role": "user", "content": "When do you roast?"},
    {"role": "assistant", "content": "We roast every Tuesday and Thursday, in small batches."},
]


@pytest.fixture(scope="module")
def vocab(tiny_model_dir: Path) -> dict[str, int]:
    return load_tokenizer(tiny_model_dir).get_vocab()


def test_the_same_vocabulary_passes_quietly(vocab: dict[str, int]) -> None:
    warnings: list[str] = []
    width = shared_width(dict(vocab), vocab, 49152, 49152, teacher_name="t", method="kd", warn=warnings.append)
    assert width == 49152 and warnings == []


def test_same_family_with_other_sizes_is_sliced_with_a_warning(vocab: dict[str, int]) -> None:
    warnings: list[str] = []
    width = shared_width(vocab, vocab, 49152 + 128, 49152, teacher_name="t", method="kd", warn=warnings.append)
    assert width == 49152 and "first 49152" in warnings[0]
    extended = {**vocab, "<|tool|>": len(vocab)}  # a tokenizer with one more token at the end
    width = shared_width(extended, vocab, 49153, 49152, teacher_name="t", method="sparse", warn=warnings.append)
    assert width == 49152 and len(warnings) == 2


def test_another_tokenizer_is_a_one_line_error_that_proposes_sft(vocab: dict[str, int]) -> None:
    bert = load_tokenizer(minilm_dir()).get_vocab()
    with pytest.raises(AlambicError) as error:
        shared_width(bert, vocab, len(bert), 49152, teacher_name="MiniLM", method="kd", warn=print)
    message = str(error.value)
    assert "\n" not in message and "MiniLM" in message and "distill.method = 'sft'" in message
    reordered = {token: (i + 1) % len(vocab) for token, i in vocab.items()}  # same tokens, other ids
    with pytest.raises(AlambicError, match="different tokenizers"):
        shared_width(reordered, vocab, 49152, 49152, teacher_name="t", method="kd", warn=print)


def test_kd_from_a_teacher_with_padded_logits_uses_the_shared_part(tiny_model_dir: Path, tmp_path: Path) -> None:
    teacher_model = load_causal_lm(tiny_model_dir)
    teacher_model.resize_token_embeddings(49152 + 64)  # as Qwen2.5-7B pads 151665 tokens to 152064 logits
    teacher_model.save_pretrained(tmp_path / "padded", safe_serialization=True)
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "padded")
    teacher = HFTeacher(tmp_path / "padded", False)
    assert teacher.width == 49152 + 64
    example = encode(load_tokenizer(tiny_model_dir), MESSAGES, 128)
    student = load_causal_lm(tiny_model_dir)
    torch.nn.init.normal_(student.model.layers[1].mlp.down_proj.weight)  # differ from the teacher
    batch = make_batch([example], 2, True, 128)
    settings = DistillSection(method="kd", kd_ratio=1.0, precision="fp32")
    loss = batch_loss(student, batch, [0], DenseTeacher(teacher, [example], [example], 2), settings, 1.0)
    with torch.no_grad():
        expected = generalised_jsd(
            student(**batch.model_inputs()).logits,
            teacher.model(**batch.model_inputs()).logits[..., :49152],
            labels=batch.labels,
            num_tokens=1.0,
        )
    assert float(loss.kd) == pytest.approx(float(expected), rel=1e-5) and float(expected) > 0
    assert labelled_tokens([example]) == int((batch.labels != -100).sum())


def test_the_dense_teacher_reads_its_own_prompt_and_lends_only_its_answer_rows(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    student = encode(tokenizer, MESSAGES, 128)
    with_chunk = [{"role": "system", "content": "Reference: roasting days are Tuesday and Thursday."}, *MESSAGES[1:]]
    own = encode(tokenizer, with_chunk, 128)
    assert own.answer_ids == student.answer_ids and own.answer_start != student.answer_start
    teacher = HFTeacher(tiny_model_dir, False)
    batch = make_batch([student], 2, True, 128)
    hidden, covered, head = DenseTeacher(teacher, [own], [student], 2).for_batch(batch, [0])
    assert covered.sum() == len(student.answer_ids) and head is decoder_and_head(teacher.model)[1]
    alone = teacher.hidden(make_batch([own], 2, True, 128))[0]
    rows = torch.arange(own.answer_start, own.answer_start + len(own.answer_ids))
    torch.testing.assert_close(hidden[covered], alone[rows])


@pytest.mark.integration
def test_gguf_and_transformers_teachers_give_the_same_top_k_rows(tiny_model_dir: Path) -> None:
    """The embedded teacher through llama.cpp and through transformers: same vocabulary, rows aligned."""
    tokenizer: Any = load_tokenizer(tiny_model_dir)
    examples: list[Example] = [encode(tokenizer, MESSAGES, 128)]
    gguf = GGUFTeacher(embedded_gguf(), 256)
    hf = HFTeacher(embedded_hf_dir(), False)
    try:
        assert gguf.vocab == hf.vocab == tokenizer.get_vocab() and gguf.width == hf.width == 49152
        from_gguf = gguf.top_k(examples, 8, 49152, 2, 128)[0]
        from_hf = hf.top_k(examples, 8, 49152, 2, 128)[0]
    finally:
        gguf.close()
    assert from_gguf.ids.shape == (len(examples[0].answer_ids), 8)
    agree = (from_gguf.ids[:, 0] == from_hf.ids[:, 0]).float().mean()
    assert agree >= 0.9  # an off-by-one alignment would agree on almost none
    # llama.cpp computes with 8-bit activations against the Q4 weights; transformers in fp32 from the same weights
    difference = (from_gguf.logprobs[:, 0] - from_hf.logprobs[:, 0]).abs()
    assert difference.mean() < 0.1 and difference.max() < 0.3
