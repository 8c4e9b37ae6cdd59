from pathlib import Path

import pytest
import torch
from rich.console import Console

from alambic.config import DistillSection
from alambic.distill.batches import Example
from alambic.distill.logits_store import LogitsStore, LogitsStoreWriter
from alambic.distill.on_policy import OnPolicy
from alambic.distill.student import build_student, evenly_spaced_layers, prune_layers
from alambic.distill.teachers import DenseTeacher, HFTeacher, SparseTeacher, TeacherSignal
from alambic.distill.train import IGNORE_INDEX, Trainer, encode, mean_loss
from alambic.models.hf import load_causal_lm, load_tokenizer

MESSAGES = [
    {"role": "system", "content": "You are the support assistant."},
    {"role": "user", "content": "When do you roast?"},
    {"role": "assistant", "content": "We roast every Tuesday and Thursday."},
]
ARABIC = [
    {"role": "system", "content": "أنت مساعد خدمة العملاء."},
    {"role": "user", "content": "هل تشحنون إلى مصر؟"},
    {"role": "assistant", "content": "نعم، نشحن إلى مصر خلال 6 إلى 10 أيام عمل."},
]


def test_evenly_spaced_layers_keep_first_and_last() -> None:
    assert evenly_spaced_layers(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert evenly_spaced_layers(4, 2) == [0, 3]
    assert evenly_spaced_layers(4, 9) == [0, 1, 2, 3]
    assert evenly_spaced_layers(4, 1) == [0]


def test_encode_labels_only_the_answer(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    for messages in (MESSAGES, ARABIC):
        example = encode(tokenizer, messages, max_len=512)
        labelled = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE_INDEX]
        assert tokenizer.decode(labelled).strip() == messages[-1]["content"] + "<|im_end|>"


def test_pruned_student_keeps_the_chosen_layers(tiny_model_dir: Path, tmp_path: Path) -> None:
    info = build_student(tiny_model_dir, tmp_path / "student", layers=2)
    assert info["kept_layers"] == [0, 3] and info["base_layers"] == 4
    base, student = load_causal_lm(tiny_model_dir), load_causal_lm(tmp_path / "student")
    assert student.config.num_hidden_layers == 2
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, base.model.layers[3].mlp.up_proj.weight)
    full = build_student(tiny_model_dir, tmp_path / "full", layers=None)
    ids = torch.tensor([[1, 200, 300, 400]])
    same = load_causal_lm(tmp_path / "full")
    assert full["kept_layers"] == [0, 1, 2, 3]
    assert torch.allclose(same(ids).logits, base(ids).logits)


def teacher_signal(method: str, tiny_model_dir: Path, examples: list[Example], store: Path) -> TeacherSignal | None:
    if method == "sft":
        return None
    teacher = HFTeacher(tiny_model_dir, False)
    if method in ("kd", "gkd"):
        return DenseTeacher(teacher, examples, examples, 2)
    if not store.exists():
        with LogitsStoreWriter(store, k=16, vocab_size=49152, teacher="tiny", dataset_hash="test") as writer:
            for example, top in zip(examples, teacher.top_k(examples, 16, 49152, 2, 128), strict=True):
                writer.add(example.key, top.ids, top.logprobs)
    return SparseTeacher(LogitsStore(store), examples, "uniform")


def make_trainer(tiny_model_dir: Path, checkpoint: Path, method: str = "sft", **overrides: object) -> Trainer:
    tokenizer = load_tokenizer(tiny_model_dir)
    examples = [encode(tokenizer, messages, 128, key=f"item-{i}") for i, messages in enumerate([MESSAGES, ARABIC] * 3)]
    settings = DistillSection(
        **{"epochs": 4, **overrides},
        method=method,
        batch_size=2,
        learning_rate=3e-3,
        precision="fp32",
        kd_ratio=0.7,
        gkd_max_new_tokens=8,
    )
    teacher = teacher_signal(method, tiny_model_dir, examples, checkpoint.parent / "store")
    on_policy = None
    if method == "gkd":
        on_policy = OnPolicy(HFTeacher(tiny_model_dir, False), examples, examples, settings, 2, 2)
    torch.manual_seed(0)
    model = load_causal_lm(tiny_model_dir) if method == "sft" else prune_layers(load_causal_lm(tiny_model_dir), [0, 3])
    return Trainer(model, examples, tokenizer.pad_token_id, settings, checkpoint, teacher, on_policy)


def test_training_lowers_the_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_model_dir, tmp_path / "ckpt", checkpoint_every=100)
    before = mean_loss(trainer.model, trainer.examples, trainer.pad_id)
    result = trainer.train(Console(quiet=True))
    after = mean_loss(trainer.model, trainer.examples, trainer.pad_id)
    assert result.steps == 12 and len(result.losses) == 12
    assert after < before * 0.7


@pytest.mark.parametrize("method", ["sft", "kd", "sparse", "gkd"])
def test_resumed_training_continues_the_same_loss_curve(tiny_model_dir: Path, tmp_path: Path, method: str) -> None:
    settings = {"epochs": 1.3, "checkpoint_every": 2}  # 4 steps of 3 per epoch: the resumed part crosses an epoch
    straight = make_trainer(tiny_model_dir, tmp_path / "a", method, **settings).train(Console(quiet=True))
    first = make_trainer(tiny_model_dir, tmp_path / "b", method, **settings)
    first.total_steps = 2  # stop early, as a crash after the step-2 checkpoint would
    first.train(Console(quiet=True))
    resumed = make_trainer(tiny_model_dir, tmp_path / "b", method, **settings).train(Console(quiet=True))
    assert resumed.resumed_from == 2
    assert [s for s, _ in resumed.losses] == list(range(1, 5))
    assert [v for _, v in resumed.losses] == pytest.approx([v for _, v in straight.losses], rel=1e-5)
