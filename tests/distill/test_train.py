import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from alambic.config import DistillSection
from alambic.distill import with_lora
from alambic.distill.logits_store import LogitsStore, LogitsStoreWriter
from alambic.distill.on_policy import OnPolicy
from alambic.distill.student import build_student, evenly_spaced_layers, prune_layers
from alambic.distill.teachers import DenseTeacher, HFTeacher, SparseTeacher, TeacherSignal
from alambic.distill.train import Trainer, use_bf16
from alambic.errors import AlambicError
from alambic.models.hf import load_causal_lm, load_tokenizer
from alambic.scoring import mean_loss
from alambic.scoring.batches import Example, encode
from alambic.scoring.losses import IGNORE_INDEX

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


def teacher_signal(
    settings: DistillSection, tiny_model_dir: Path, examples: list[Example], store: Path
) -> TeacherSignal | None:
    if settings.method == "sft":
        return None
    teacher = HFTeacher(tiny_model_dir, use_bf16(settings.precision))
    if settings.method in ("kd", "gkd"):
        return DenseTeacher(teacher, examples, examples, 2)
    if not store.exists():
        with LogitsStoreWriter(store, k=16, vocab_size=49152, teacher="tiny", dataset_hash="test") as writer:
            for example, top in zip(examples, teacher.top_k(examples, 16, 49152, 2, 128), strict=True):
                writer.add(example.key, top.ids, top.logprobs)
    return SparseTeacher(LogitsStore(store), examples, settings.tail)


def make_trainer(tiny_model_dir: Path, checkpoint: Path, method: str = "sft", **overrides: object) -> Trainer:
    tokenizer = load_tokenizer(tiny_model_dir)
    examples = [encode(tokenizer, messages, 128, key=f"item-{i}") for i, messages in enumerate([MESSAGES, ARABIC] * 3)]
    defaults = {"epochs": 4, "batch_size": 2, "learning_rate": 3e-3, "precision": "fp32", "kd_ratio": 0.7}
    settings = DistillSection(**{**defaults, **overrides}, method=method, gkd_max_new_tokens=8)
    teacher = teacher_signal(settings, tiny_model_dir, examples, checkpoint.parent / "store")
    on_policy = None
    if method == "gkd":
        local = HFTeacher(tiny_model_dir, use_bf16(settings.precision))
        on_policy = OnPolicy(local, examples, examples, settings, 2, 2)
    torch.manual_seed(0)
    model = load_causal_lm(tiny_model_dir) if method == "sft" else prune_layers(load_causal_lm(tiny_model_dir), [0, 3])
    if settings.adapter == "lora":
        model = with_lora(model, settings)
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


class TouchOnLoad:
    """A pickled object whose unpickling runs code: here it creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def checkpointed(tiny_model_dir: Path, folder: Path, adapter: str = "full") -> Path:
    """A checkpoint after one step of sft; returns its state.pt."""
    trainer = make_trainer(tiny_model_dir, folder, adapter=adapter)
    trainer.total_steps = 1
    trainer.train(Console(quiet=True))
    return folder / "state.pt"


def test_a_checkpoint_that_runs_code_when_read_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    state_file = checkpointed(tiny_model_dir, tmp_path / "ckpt")
    marker = tmp_path / "code-ran"
    state = torch.load(state_file, weights_only=True)
    torch.save({**state, "extra": TouchOnLoad(marker)}, state_file)
    with pytest.raises(AlambicError, match=r"state\.pt: not a checkpoint alambic can read") as error:
        make_trainer(tiny_model_dir, tmp_path / "ckpt").train(Console(quiet=True))
    assert "\n" not in str(error.value) and not marker.exists()


@pytest.mark.parametrize("change", ["missing", "unexpected", "reshaped"])
def test_a_checkpoint_of_another_student_is_refused_not_half_loaded(
    tiny_model_dir: Path, tmp_path: Path, change: str
) -> None:
    state_file = checkpointed(tiny_model_dir, tmp_path / "ckpt")
    state = torch.load(state_file, weights_only=True)
    weights = state["model"]
    name = next(n for n in weights if n.endswith("layers.1.mlp.up_proj.weight"))
    if change == "missing":  # e.g. a student pruned to fewer layers
        del weights[name]
    elif change == "unexpected":  # e.g. a student with more layers
        weights[name.replace("layers.1.", "layers.7.")] = weights[name]
    else:  # e.g. another base model
        weights[name] = weights[name][:, :-1]
    torch.save(state, state_file)
    counted = {"missing": "1 weights missing", "unexpected": "1 unexpected", "reshaped": "1 of another shape"}
    with pytest.raises(AlambicError, match=f"a checkpoint of another student .*{counted[change]}") as error:
        make_trainer(tiny_model_dir, tmp_path / "ckpt").train(Console(quiet=True))
    assert "\n" not in str(error.value) and "prune_layers" in str(error.value)


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_an_intact_checkpoint_resumes_with_every_trained_weight(
    tiny_model_dir: Path, tmp_path: Path, adapter: str
) -> None:
    """LoRA checkpoints hold the adapters only: the frozen base is not "missing"."""
    state_file = checkpointed(tiny_model_dir, tmp_path / "ckpt", adapter)
    saved = torch.load(state_file, weights_only=True)["model"]
    resumed = make_trainer(tiny_model_dir, tmp_path / "ckpt", adapter=adapter)
    assert resumed._load_checkpoint() == 1
    trained = {name: p for name, p in resumed.model.named_parameters() if p.requires_grad}
    assert trained.keys() == saved.keys() and (adapter == "full") is not any("lora" in name for name in saved)
    for name, param in trained.items():
        torch.testing.assert_close(param.detach(), saved[name], rtol=0, atol=0, msg=name)


# Every loss path of the trainer: the fused forward KL (T 1 and 2), the autograd divergences (JSD, reverse KL),
# each sparse tail, and gkd's on-policy steps; the examples' prompts are masked out of the loss.
LOSS_PATHS: dict[str, tuple[str, dict[str, object]]] = {
    "sft": ("sft", {}),
    "kd-forward-fused": ("kd", {}),
    "kd-forward-fused-t2": ("kd", {"temperature": 2.0}),
    "kd-jsd": ("kd", {"beta": 0.5}),
    "kd-reverse": ("kd", {"beta": 1.0}),
    "sparse-zero": ("sparse", {"tail": "zero"}),
    "sparse-uniform": ("sparse", {"tail": "uniform"}),
    "sparse-uniform-jsd": ("sparse", {"tail": "uniform", "beta": 0.5}),
    "sparse-renormalise-reverse": ("sparse", {"tail": "renormalise", "beta": 1.0}),
    "gkd": ("gkd", {"beta": 0.5, "gkd_lambda": 1.0}),
}


@pytest.mark.parametrize("loss_path", LOSS_PATHS)
def test_every_loss_path_trains_under_fp32_and_bf16(tiny_model_dir: Path, tmp_path: Path, loss_path: str) -> None:
    """bf16 autocast runs on any CPU (slowly without native bf16), so both precisions run on every machine."""
    method, overrides = LOSS_PATHS[loss_path]
    first_losses = {}
    for precision in ("fp32", "bf16"):
        settings = {**overrides, "precision": precision, "epochs": 1, "checkpoint_every": 100}
        trainer = make_trainer(tiny_model_dir, tmp_path / precision, method, **settings)
        assert trainer.bf16 == (precision == "bf16")
        assert any(label == IGNORE_INDEX for example in trainer.examples for label in example.labels)
        losses = [loss for _, loss in trainer.train(Console(quiet=True)).losses]
        assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses), losses
        first_losses[precision] = losses[0]
    # Same weights, same data: bf16's 8-bit mantissa moves the first step's loss by well under 5%.
    assert first_losses["bf16"] == pytest.approx(first_losses["fp32"], rel=0.05)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    from alambic.distill import train

    monkeypatch.setattr(train, "native_cpu_bf16", lambda: native)
    assert use_bf16("auto") is native and use_bf16("auto", torch.device("cpu")) is native
    assert use_bf16("bf16") and not use_bf16("fp32")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_a_gpu_asks_the_gpu_not_the_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    from alambic.distill import train

    monkeypatch.setattr(train, "native_cpu_bf16", lambda: not native)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: native)
    assert use_bf16("auto", torch.device("cuda")) is native and use_bf16("auto", "cuda:1") is native
    assert not use_bf16("fp32", "cuda") and use_bf16("bf16", "cuda")
