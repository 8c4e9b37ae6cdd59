"""The training loop: sequence-level KD on the teacher's answers, with checkpoints that resume exactly."""

from __future__ import annotations

import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import TextColumn

from alambic.config import DistillSection
from alambic.models.base import Message
from alambic.stage import progress_bar

IGNORE_INDEX = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def encode(tokenizer: Any, messages: list[Message], max_len: int) -> Example:
    """Token ids of a whole conversation, with labels only on the last (assistant) turn."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("chat template does not extend the prompt; cannot mask the prompt tokens")
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    return Example(full_ids[:max_len], labels[:max_len])


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def use_bf16(precision: str) -> bool:
    if precision == "auto":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return precision == "bf16"


@torch.no_grad()
def mean_loss(model: Any, examples: list[Example], pad_id: int, batch_size: int = 8) -> float:
    """Token-weighted cross-entropy over the labelled tokens."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        targets = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += int((targets != IGNORE_INDEX).sum())
    return total / max(count, 1)


class Trainer:
    def __init__(
        self, model: Any, examples: list[Example], pad_id: int, settings: DistillSection, checkpoint_dir: Path
    ) -> None:
        if not examples:
            raise ValueError("no training examples")
        self.model = model
        self.examples = examples
        self.pad_id = pad_id
        self.settings = settings
        self.checkpoint_dir = checkpoint_dir
        self.steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
        self.total_steps = max(1, math.ceil(settings.epochs * self.steps_per_epoch))
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        from transformers import get_cosine_schedule_with_warmup

        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, int(settings.warmup_fraction * self.total_steps), self.total_steps
        )
        self.bf16 = use_bf16(settings.precision)
        self._stop_requested = False

    def batch_indices(self, step: int) -> list[int]:
        """The examples of a step: a fresh permutation each epoch, fixed by the seed."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.settings.seed * 100_003 + epoch)
        order = torch.randperm(len(self.examples), generator=generator).tolist()
        size = self.settings.batch_size
        return order[position * size : (position + 1) * size]

    def train(self, console: Console) -> TrainResult:
        result = TrainResult(steps=self.total_steps, resumed_from=self._load_checkpoint())
        result.losses = self._loaded_losses
        previous = signal.signal(signal.SIGTERM, self._request_stop)
        self.model.train()
        loss_column = TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:.0f} tok/s")
        try:
            with progress_bar(console, loss_column) as progress:
                task = progress.add_task(
                    "distill: training",
                    total=self.total_steps,
                    completed=result.resumed_from,
                    loss=0.0,
                    tps=0.0,
                )
                started = time.monotonic()
                for step in range(result.resumed_from, self.total_steps):
                    loss, tokens = self._step(step)
                    result.losses.append((step + 1, loss))
                    result.tokens += tokens
                    result.seconds = time.monotonic() - started
                    progress.update(task, advance=1, loss=loss, tps=result.tokens_per_second)
                    done = step + 1
                    if done % self.settings.checkpoint_every == 0 or done == self.total_steps:
                        self._save_checkpoint(done, result.losses)
                    if self._stop_requested:
                        self._save_checkpoint(done, result.losses)
                        result.interrupted = True
                        break
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.model.eval()
        return result

    def _step(self, step: int) -> tuple[float, int]:
        batch = collate([self.examples[i] for i in self.batch_indices(step)], self.pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            output = self.model(**batch)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(output.loss.detach()), int(batch["attention_mask"].sum())

    def _request_stop(self, signum: int, frame: object) -> None:
        self._stop_requested = True

    # checkpoints ------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.model.state_dict().items() if k in trainable}

    def _save_checkpoint(self, step: int, losses: list[tuple[int, float]]) -> None:
        partial = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        state = {
            "step": step,
            "losses": losses,
            "model": self._trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        torch.save(state, partial / "state.pt")
        # Swap in the new checkpoint only once it is complete on disk.
        old = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint_dir.exists():
            os.replace(self.checkpoint_dir, old)
        os.replace(partial, self.checkpoint_dir)
        shutil.rmtree(old, ignore_errors=True)

    def _load_checkpoint(self) -> int:
        self._loaded_losses: list[tuple[int, float]] = []
        path = self.checkpoint_dir / "state.pt"
        if not path.is_file():
            old = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".old") / "state.pt"
            if not old.is_file():
                return 0
            path = old
        state = torch.load(path, weights_only=False)
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self._loaded_losses = [(int(step), float(loss)) for step, loss in state["losses"]]
        return int(state["step"])
