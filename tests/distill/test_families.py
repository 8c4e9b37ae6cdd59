"""The student works by architecture, not by name: pruning, LoRA, sft and kd on tiny random Llama, Qwen2 and Gemma 3
models, found from each model's own structure; an architecture without a decoder layer stack gets a one-line error."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from rich.console import Console

from alambic.config import DistillSection
from alambic.distill import with_lora
from alambic.distill.student import build_student, decoder_layers, lora_targets, prune_layers
from alambic.distill.teachers import DenseTeacher, GGUFTeacher, HFTeacher
from alambic.distill.train import Trainer, batch_loss
from alambic.errors import AlambicError
from alambic.models.embedded import embedded_gguf, embedded_hf_dir
from alambic.models.hf import load_causal_lm, load_tokenizer
from alambic.scoring.batches import IGNORE_INDEX, Example, encode, labelled_tokens, make_batch

FAMILIES = ("llama", "qwen2", "gemma3")
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PAD = 2
VOCAB = 512  # small, so that a training step costs milliseconds: the examples' token ids are folded into it
CONVERSATIONS = [
    [
        {"role": "system", "content": "You are the support assistant."},
        {"role": "user", "content": "When do you roast?"},
        {"role": "assistant", "content": "We roast every Tuesday and Thursday."},
    ],
    [
        {"role": "system", "content": "أنت مساعد خدمة العملاء."},
        {"role": "user", "content": "هل تشحنون إلى مصر؟"},
        {"role": "assistant", "content": "نعم، نشحن إلى مصر خلال 6 إلى 10 أيام عمل."},
    ],
]


def family_config(family: str, vocab_size: int = VOCAB) -> Any:
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": PAD,
        "pad_token_id": PAD,
    }
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common)
    # Layers 0-2 slide over a window shorter than the examples, layer 3 sees everything: even pruning keeps
    # [0, 3], so the kept layer types must be [sliding, full], not the first two of the base's.
    return Gemma3TextConfig(**common, head_dim=16, sliding_window=16, sliding_window_pattern=4)


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model of the family, saved with the SmolLM2 tokenizer (which a student folder carries)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(family_config(request.param))
    path = tmp_path_factory.mktemp(f"tiny-{request.param}")
    model.save_pretrained(path, safe_serialization=True)
    load_tokenizer(embedded_hf_dir()).save_pretrained(path)
    return path


def folded(example: Example) -> Example:
    ids = [token % VOCAB for token in example.input_ids]
    labels = [label if label == IGNORE_INDEX else label % VOCAB for label in example.labels]
    return Example(ids, labels, example.key)


@pytest.fixture(scope="module")
def examples(family_dir: Path) -> list[Example]:
    """Chat examples (prompt masked out of the labels) of the SmolLM2 template, in the models' small vocabulary."""
    tokenizer = load_tokenizer(family_dir)
    conversations = enumerate(CONVERSATIONS * 3)
    return [folded(encode(tokenizer, messages, 128, key=f"item-{i}")) for i, messages in conversations]


def without_layers(model: Any, dropped: list[int]) -> list[Any]:
    """Make these decoder layers pass their input through unchanged; returns the hook handles."""

    def identity(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        before = args[0] if args else kwargs["hidden_states"]
        return (before, *output[1:]) if isinstance(output, tuple) else before

    layers = decoder_layers(model)
    return [layers[i].register_forward_hook(identity, with_kwargs=True) for i in dropped]


def layer_indices(model: Any) -> list[list[int]]:
    """Per decoder layer, the layer_idx of every module that keeps one."""
    return [
        [m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]
        for layer in decoder_layers(model)
    ]


@pytest.mark.parametrize("strategy", ["even", "importance"])
def test_pruned_student_computes_the_base_without_the_dropped_layers(
    family_dir: Path, examples: list[Example], tmp_path: Path, strategy: str
) -> None:
    info = build_student(family_dir, tmp_path / "student", 2, strategy, examples, pad_id=PAD)
    keep = info["kept_layers"]
    assert len(keep) == 2 and info["base_layers"] == 4
    base, student = load_causal_lm(family_dir), load_causal_lm(tmp_path / "student")
    assert student.config.num_hidden_layers == 2 and len(decoder_layers(student)) == 2
    assert all(indices and set(indices) == {new} for new, indices in enumerate(layer_indices(student)))
    if getattr(base.config, "layer_types", None) is not None:
        assert student.config.layer_types == [base.config.layer_types[i] for i in keep]

    ids = torch.tensor([examples[0].input_ids])
    assert ids.shape[1] > 16  # longer than Gemma 3's sliding window
    handles = without_layers(base, [i for i in range(4) if i not in keep])
    with torch.no_grad():
        torch.testing.assert_close(student(ids).logits, base(ids).logits, rtol=1e-4, atol=1e-5)
    for handle in handles:
        handle.remove()


def test_pruned_student_generates_with_its_kv_cache(family_dir: Path, examples: list[Example]) -> None:
    """The renumbered layers find their own KV cache slots: cached decoding gives the uncached logits."""
    student = prune_layers(load_causal_lm(family_dir), [0, 3])
    ids = torch.tensor([examples[0].input_ids])
    with torch.no_grad():
        out = student.generate(
            ids, max_new_tokens=6, do_sample=False, pad_token_id=PAD, output_logits=True, return_dict_in_generate=True
        )
        uncached = student(out.sequences, use_cache=False).logits[:, ids.shape[1] - 1 : -1]
    assert out.sequences.shape[1] > ids.shape[1]
    torch.testing.assert_close(torch.stack(out.logits, dim=1), uncached, rtol=1e-4, atol=1e-5)


def test_packed_examples_stay_apart(family_dir: Path, examples: list[Example]) -> None:
    """Training packs examples into one row: each must see only itself, sliding window or not."""
    body = load_causal_lm(family_dir).get_decoder()
    first, second = examples[0], examples[1]
    batch = make_batch([first, second], PAD, packing=True, capacity=512)
    assert batch.input_ids.shape[0] == 1
    with torch.no_grad():
        packed = body(**batch.model_inputs()).last_hidden_state.flatten(0, 1)
        for index, example in enumerate((first, second)):
            alone = body(**make_batch([example], PAD, packing=False, capacity=0).model_inputs()).last_hidden_state
            rows = packed[batch.starts[index] : batch.starts[index] + len(example.input_ids)]
            torch.testing.assert_close(rows, alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_are_the_attention_and_mlp_projections(family: str) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(family_config(family))
    assert lora_targets(model) == PROJECTIONS
    adapted = with_lora(model, DistillSection(adapter="lora", lora_r=4))
    trained = [name for name, param in adapted.named_parameters() if param.requires_grad]
    assert len(trained) == 4 * len(PROJECTIONS) * 2  # A and B, for each projection of each layer
    assert all(".layers." in name and "lora_" in name for name in trained)


def objective(model: Any, examples: list[Example], teacher: DenseTeacher | None, settings: DistillSection) -> float:
    """The training loss over all the examples at once."""
    batch = make_batch(examples, PAD, packing=True, capacity=settings.max_seq_len)
    with torch.no_grad():
        loss = batch_loss(model, batch, range(len(examples)), teacher, settings, labelled_tokens(examples))
    return float(loss.loss)


@pytest.mark.parametrize(("method", "adapter"), [("sft", "full"), ("kd", "lora")])
def test_a_few_steps_lower_the_loss(
    family_dir: Path, examples: list[Example], tmp_path: Path, method: str, adapter: str
) -> None:
    settings = DistillSection(
        method=method,
        adapter=adapter,
        epochs=2,
        batch_size=2,
        learning_rate=3e-3,
        precision="fp32",
        kd_ratio=0.7,
        checkpoint_every=100,
    )
    teacher = DenseTeacher(HFTeacher(family_dir, False), examples, examples, PAD) if method == "kd" else None
    torch.manual_seed(0)
    model = prune_layers(load_causal_lm(family_dir), [0, 3])
    model = with_lora(model, settings) if adapter == "lora" else model
    before = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}
    start = objective(model, examples, teacher, settings)
    result = Trainer(model, examples, PAD, settings, tmp_path / "ckpt", teacher).train(Console(quiet=True))
    assert result.steps == 6
    assert objective(model, examples, teacher, settings) < start
    after = dict(model.named_parameters())
    assert all(not torch.equal(after[name], weights) for name, weights in before.items())


class ToyRecurrent(torch.nn.Module):
    """A model with no stack of decoder layers: its layers live inside one GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type="toy-gru", num_hidden_layers=2)
        self.rnn = torch.nn.GRU(8, 8, num_layers=2)


@pytest.mark.parametrize("operation", ["prune", "lora"])
def test_an_unsupported_architecture_is_named_in_one_line(operation: str) -> None:
    with pytest.raises(AlambicError, match="the toy-gru architecture is not supported for pruning/LoRA") as error:
        if operation == "prune":
            prune_layers(ToyRecurrent(), [0])
        else:
            with_lora(ToyRecurrent(), DistillSection(adapter="lora"))
    assert "\n" not in str(error.value)


def test_a_gguf_teacher_llama_cpp_cannot_load_fails_with_its_reason(tmp_path: Path) -> None:
    """llama.cpp's own log, silenced while it loads, is what says why: it ends the one-line error."""
    truncated = tmp_path / "teacher.gguf"
    with embedded_gguf().open("rb") as whole:
        truncated.write_bytes(whole.read(3_000_000))
    with pytest.raises(AlambicError, match=r"cannot load this GGUF .* llama\.cpp said: .*error loading model") as error:
        GGUFTeacher(truncated, 64)
    assert "\n" not in str(error.value)
