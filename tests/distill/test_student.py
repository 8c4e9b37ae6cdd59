"""Depth pruning by block importance: layers that barely change their input go; the choice is reported and stable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alambic.distill.student import block_importance, build_student, most_important_layers
from alambic.models.hf import load_causal_lm, load_tokenizer
from alambic.scoring.batches import Example, encode

QUESTIONS = [
    "When do you roast?",
    "Do you ship to Egypt?",
    "Which grind for a moka pot?",
    "هل عندكم قهوة منزوعة الكافيين؟",
]


@pytest.fixture(scope="module")
def examples(tiny_model_dir: Path) -> list[Example]:
    tokenizer = load_tokenizer(tiny_model_dir)
    return [
        encode(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": "Yes, every week."}], 128)
        for q in QUESTIONS
    ]


@pytest.fixture(scope="module")
def base_with_idle_edges(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its first and last layers silenced (their residual branches output zero)."""
    model = load_causal_lm(tiny_model_dir)
    for index in (0, 3):
        layer = model.model.layers[index]
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
    path = tmp_path_factory.mktemp("idle-edges")
    model.save_pretrained(path, safe_serialization=True)
    load_tokenizer(tiny_model_dir).save_pretrained(path)
    return path


def test_most_important_layers_keeps_model_order_and_breaks_ties_early() -> None:
    assert most_important_layers([0.1, 0.5, 0.2, 0.5], 2) == [1, 3]
    assert most_important_layers([0.3, 0.1, 0.3, 0.3], 2) == [0, 2]


def test_importance_pruning_drops_the_idle_layers_that_even_spacing_keeps(
    base_with_idle_edges: Path, examples: list[Example], tmp_path: Path
) -> None:
    importance = block_importance(load_causal_lm(base_with_idle_edges), examples, pad_id=2)
    assert importance[0] == pytest.approx(0, abs=1e-6) and importance[3] == pytest.approx(0, abs=1e-6)
    assert min(importance[1], importance[2]) > 0.01

    info = build_student(base_with_idle_edges, tmp_path / "importance", 2, "importance", examples, pad_id=2)
    assert info["kept_layers"] == [1, 2] and info["prune_strategy"] == "importance"
    assert info["layer_importance"] == pytest.approx(importance, abs=1e-6)
    even = build_student(base_with_idle_edges, tmp_path / "even", 2, "even")
    assert even["kept_layers"] == [0, 3] and "layer_importance" not in even

    base, student = load_causal_lm(base_with_idle_edges), load_causal_lm(tmp_path / "importance")
    assert student.config.num_hidden_layers == 2
    assert torch.equal(student.model.layers[0].mlp.up_proj.weight, base.model.layers[1].mlp.up_proj.weight)


def test_importance_is_deterministic(tiny_model_dir: Path, examples: list[Example], tmp_path: Path) -> None:
    first = build_student(tiny_model_dir, tmp_path / "a", 2, "importance", examples, pad_id=2)
    second = build_student(tiny_model_dir, tmp_path / "b", 2, "importance", list(examples), pad_id=2)
    assert first["kept_layers"] == second["kept_layers"] and len(first["kept_layers"]) == 2
    assert first["layer_importance"] == second["layer_importance"]
