"""Student initialisation: a depth-pruned copy of the base model.

The layers kept are either evenly spaced, or the most important ones on the project's own data. A layer's
importance is its Block Influence (ShortGPT, Men et al. 2024; also used by Minitron's depth pruning):
1 - the mean cosine similarity between the hidden state entering the layer and the one leaving it, over the
tokens of the training examples. A layer that barely changes its input can go.

Nothing here is tied to one family: the decoder layers are found from the model's own structure, as are the
projections LoRA adapts, so Llama, Qwen2 and Gemma 3 bases are handled alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alambic.errors import AlambicError
from alambic.scoring import unwrapped
from alambic.scoring.batches import Example, make_batch

# Config lists with one entry per decoder layer (Gemma 3's sliding/full attention pattern, SmolLM3's NoPE layers):
# they must follow the layers kept, or a reloaded student would give a layer another one's attention.
PER_LAYER_SETTINGS = ("layer_types", "no_rope_layers")


def text_config(model: Any) -> Any:
    """The config that counts the decoder layers (a multimodal model keeps it under text_config)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def decoder_body(model: Any) -> Any:
    """The transformer body (hidden states out), without the output layer where the model says which it is."""
    base = unwrapped(model)
    return base.get_decoder() if hasattr(base, "get_decoder") else base


def unsupported(model: Any) -> AlambicError:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    return AlambicError(
        f"distill.base: the {model_type} architecture is not supported for pruning/LoRA (no stack of decoder "
        f"layers found in {type(model).__name__}); use a Llama, Qwen2 or Gemma 3 model, or prune_layers = null "
        'with adapter = "full"'
    )


def decoder_stack(model: Any) -> tuple[torch.nn.Module, str]:
    """The module that holds the decoder layers, and the name of its ModuleList of them: the first ModuleList
    as long as the config's layer count, in the decoder body, else anywhere in the model."""
    base = unwrapped(model)
    count = getattr(text_config(base), "num_hidden_layers", None) if hasattr(base, "config") else None
    for root in (decoder_body(base), base) if count else ():
        for path, module in root.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == count:
                parent, _, name = path.rpartition(".")
                return root.get_submodule(parent), name
    raise unsupported(base)


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    owner, name = decoder_stack(model)
    return getattr(owner, name)


def lora_targets(model: Any) -> list[str]:
    """The names of the linear projections inside the decoder layers (attention and MLP), in model order; the
    embeddings and the output layer sit outside those layers, so they are never adapted."""
    from transformers.pytorch_utils import Conv1D  # GPT-2 style projections, which peft also adapts

    names = [
        path.rpartition(".")[2]
        for layer in decoder_layers(model)
        for path, module in layer.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D)
    ]
    if not names:
        raise unsupported(unwrapped(model))
    return list(dict.fromkeys(names))


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
    layers = decoder_layers(model)
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
            decoder_body(model)(**batch.model_inputs())
            seen += int(real["mask"].sum())
    finally:
        for handle in handles:
            handle.remove()
    return (1 - similarity / max(seen, 1)).tolist()


def prune_layers(model: Any, keep: list[int]) -> Any:
    """Keep only these decoder layers, renumbered so that the KV cache indexes them correctly."""
    owner, name = decoder_stack(model)
    kept = torch.nn.ModuleList([getattr(owner, name)[i] for i in keep])
    setattr(owner, name, kept)
    for new_index, layer in enumerate(kept):
        renumber(layer, new_index)
    config = text_config(unwrapped(model))
    for setting in PER_LAYER_SETTINGS:
        if values := getattr(config, setting, None):
            setattr(config, setting, [values[i] for i in keep])
    config.num_hidden_layers = len(keep)
    return model


def renumber(layer: torch.nn.Module, index: int) -> None:
    """Every module of the layer that keeps its index (the attention, to find its KV cache slot; in some
    architectures the layer itself)."""
    for module in layer.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = index


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
    total = text_config(model).num_hidden_layers
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
    if keep != list(range(total)):  # so that a base alambic cannot prune still trains whole
        prune_layers(model, keep)
    model.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_dir).save_pretrained(out_dir)
    return {**info, "kept_layers": keep, "parameters": sum(p.numel() for p in model.parameters())}
