"""Student initialisation: a depth-pruned copy of the base model, keeping evenly spaced layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """Layer indices to keep: always the first and the last, the rest spread evenly between."""
    if keep >= total:
        return list(range(total))
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def prune_layers(model: Any, keep: list[int]) -> Any:
    """Keep only these decoder layers, renumbered so that the KV cache indexes them correctly."""
    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_index
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    return model


def build_student(base_dir: Path, out_dir: Path, layers: int | None) -> dict[str, Any]:
    """Write the initial student to out_dir; returns what was done, for the ledger."""
    from alambic.models.hf import load_causal_lm, load_tokenizer

    model = load_causal_lm(base_dir)
    total = model.config.num_hidden_layers
    keep = evenly_spaced_layers(total, layers) if layers else list(range(total))
    prune_layers(model, keep)
    model.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_dir).save_pretrained(out_dir)
    return {
        "base_layers": total,
        "kept_layers": keep,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
