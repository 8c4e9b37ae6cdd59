"""Student initialisation: a depth-pruned copy of the base model.

The layers kept are either evenly spaced, or the most important ones on the project's own data. A layer's
importance is its Block Influence (ShortGPT, Men et al. 2024; also used by Minitron's depth pruning):
1 - the mean cosine similarity between the hidden state entering the layer and the one leaving it, over the
tokens of the training examples. A layer that barely changes its input can go.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alambic.distill.batches import Example, make_batch


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """Layer indices to keep: always the first and the last, the rest spread evenly between."""
    if keep >= total:
        return list(range(total))
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def most_important_layers(importance: Sequence[float], keep: int) -> list[int]:
    """The `keep` layers of highest importance, in model order (ties go to the earlier layer)."""
    ranked = sorted(range(len(importance)), key=lambda i: (-importance[i], i))
    return sorted(ranked[:keep])


@torch.no_grad()
def block_importance(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int = 8) -> list[float]:
    """Per decoder layer: 1 - mean cosine(input, output) over the real tokens of `examples` (fp32, deterministic)."""
    layers = model.model.layers
    similarity = torch.zeros(len(layers), dtype=torch.float64)
    seen = 0
    real: dict[str, torch.Tensor] = {}  # the current batch's non-padding positions

    def measure(index: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            before = args[0] if args else kwargs["hidden_states"]
            after = output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)
            # An unchanged zero vector (a padding embedding) is unchanged, not orthogonal.
            cosine = torch.where(torch.eq(before, after).all(-1), 1.0, cosine)
            similarity[index] += cosine[real["mask"]].double().sum()

        return hook

    handles = [layer.register_forward_hook(measure(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        model.eval()
        for start in range(0, len(examples), batch_size):
            batch = make_batch(examples[start : start + batch_size], pad_id, packing=False, capacity=0)
            assert batch.attention_mask is not None
            real["mask"] = batch.attention_mask.bool()
            model.model(**batch.model_inputs())
            seen += int(real["mask"].sum())
    finally:
        for handle in handles:
            handle.remove()
    return (1 - similarity / max(seen, 1)).tolist()


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


def build_student(
    base_dir: Path,
    out_dir: Path,
    layers: int | None,
    strategy: str = "even",
    examples: Sequence[Example] = (),
    pad_id: int = 0,
) -> dict[str, Any]:
    """Write the initial student to out_dir; returns what was done, for the ledger."""
    from alambic.models.hf import load_causal_lm, load_tokenizer

    model = load_causal_lm(base_dir)
    total = model.config.num_hidden_layers
    info: dict[str, Any] = {"base_layers": total, "prune_strategy": strategy}
    if not layers or layers >= total:
        keep = list(range(total))
    elif strategy == "importance":
        if not examples:
            raise ValueError("importance pruning needs examples to measure the layers on")
        importance = block_importance(model, examples, pad_id)
        keep = most_important_layers(importance, layers)
        info["layer_importance"] = [round(score, 6) for score in importance]
    else:
        keep = evenly_spaced_layers(total, layers)
    prune_layers(model, keep)
    model.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_dir).save_pretrained(out_dir)
    return {**info, "kept_layers": keep, "parameters": sum(p.numel() for p in model.parameters())}
