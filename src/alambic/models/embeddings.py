"""Sentence embeddings from the bundled all-MiniLM-L6-v2, for curation's near-duplicates and eval's similarity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Embedder:
    """Sentence embeddings from the bundled all-MiniLM-L6-v2 (mean pooling, L2-normalised)."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
        self.model: Any = AutoModel.from_pretrained(model_dir).eval()

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        vectors = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(vectors) if vectors else torch.empty(0, 384)

    def cosine(self, predictions: list[str], references: list[str]) -> list[float]:
        a, b = self.embed(predictions), self.embed(references)
        return (a * b).sum(-1).tolist()
