"""The training loop: SFT or logit distillation on packed batches, with checkpoints that resume exactly."""

from __future__ import annotations

import itertools
import math
import os
import pickle
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import TextColumn
from torch import Tensor

from alambic.config import DistillSection
from alambic.distill.on_policy import OnPolicy
from alambic.distill.parallel import Parallel
from alambic.distill.teachers import TeacherSignal
from alambic.errors import AlambicError
from alambic.scoring import decoder_and_head
from alambic.scoring.batches import Batch, Example, labelled_tokens, make_batch
from alambic.scoring.losses import IGNORE_INDEX, DistillationLoss, TopKTeacher, distillation_loss
from alambic.stage import progress_bar


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


def use_bf16(precision: str, device: torch.device | str = "cpu") -> bool:
    """Whether to autocast to bf16: as asked, or under "auto" where the device computes bf16 natively. CPU
    autocast to bf16 runs everywhere, only slowly without native support, so each path can be forced."""
    if precision != "auto":
        return precision == "bf16"
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return native_cpu_bf16()


def native_cpu_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Trunk(torch.nn.Module):
    """The student up to its last hidden states: the module data parallelism wraps, since the loss applies the
    output layer itself, a chunk of rows at a time."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: Any) -> Tensor:
        return decoder_and_head(self.model)[0](**inputs).last_hidden_state


def batch_loss(
    model: Any,
    batch: Batch,
    indices: Sequence[int],
    teacher: TeacherSignal | None,
    settings: DistillSection,
    num_tokens: float,
    trunk: Trunk | None = None,
) -> DistillationLoss:
    """The loss of one micro-batch, as a sum over its labelled rows divided by ``num_tokens``.

    Rows the teacher covers get (1 - kd_ratio)·CE + kd_ratio·T²·D; the others (items without teacher log-probs,
    the answer's end-of-turn token for API log-probs) get CE alone, as `sft` would train them.
    """
    head = decoder_and_head(model)[1]
    trunk = trunk or Trunk(model)
    if teacher is None:
        hidden = trunk(**batch.model_inputs())
        return distillation_loss(hidden, batch.labels, None, kd_ratio=0.0, num_tokens=num_tokens, student_head=head)
    # The teacher runs first, so that its forward's temporaries are gone before the student's activations exist.
    signal, covered, teacher_head = teacher.for_batch(batch, indices)
    hidden = trunk(**batch.model_inputs())
    signal, covered = _on(signal, hidden.device), covered.to(hidden.device)
    distilled = distillation_loss(
        hidden,
        batch.labels.masked_fill(~covered, IGNORE_INDEX),
        signal,
        kd_ratio=settings.kd_ratio,
        beta=settings.beta,
        temperature=settings.temperature,
        num_tokens=num_tokens,
        student_head=head,
        teacher_head=teacher_head,
    )
    plain = distillation_loss(
        hidden,
        batch.labels.masked_fill(covered, IGNORE_INDEX),
        None,
        kd_ratio=0.0,
        num_tokens=num_tokens,
        student_head=head,
    )
    return DistillationLoss(distilled.loss + plain.loss, distilled.ce + plain.ce, distilled.kd, num_tokens)


def _on(signal: Tensor | TopKTeacher, device: torch.device) -> Tensor | TopKTeacher:
    if isinstance(signal, TopKTeacher):
        return TopKTeacher(signal.ids.to(device), signal.logprobs.to(device), signal.tail)
    return signal.to(device)


class Trainer:
    def __init__(
        self,
        model: Any,
        examples: list[Example],
        pad_id: int,
        settings: DistillSection,
        checkpoint_dir: Path,
        teacher: TeacherSignal | None = None,
        on_policy: OnPolicy | None = None,
        parallel: Parallel | None = None,
    ) -> None:
        if not examples:
            raise ValueError("no training examples")
        self.parallel = parallel or Parallel()
        self.model = model
        self.examples = examples
        self.pad_id = pad_id
        self.settings = settings
        self.checkpoint_dir = checkpoint_dir
        self.teacher = teacher
        self.on_policy = on_policy
        self.steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
        self.total_steps = max(1, math.ceil(settings.epochs * self.steps_per_epoch))
        params = [p for p in model.parameters() if p.requires_grad]
        # fused: one kernel per parameter, without foreach's parameter-sized temporaries (the peak of a kd step)
        fused = bool(params) and params[0].device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0, fused=fused)
        self.trunk, self.optimizer = self.parallel.prepare(Trunk(model), optimizer)
        from transformers import get_cosine_schedule_with_warmup

        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, int(settings.warmup_fraction * self.total_steps), self.total_steps
        )
        self.bf16 = use_bf16(settings.precision, self.parallel.device)
        self._stop_requested = False

    def batch_indices(self, step: int) -> list[int]:
        """The examples of a step: a fresh permutation each epoch, fixed by the seed."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.settings.seed * 100_003 + epoch)
        order = torch.randperm(len(self.examples), generator=generator).tolist()
        size = self.settings.batch_size
        return order[position * size : (position + 1) * size]

    def micro_batches(self, indices: list[int]) -> list[list[int]]:
        """The step's examples in `grad_accumulation` contiguous parts, as even in size as they can be."""
        parts = min(self.settings.grad_accumulation, len(indices))
        bounds = [round(i * len(indices) / parts) for i in range(parts + 1)]
        return [indices[a:b] for a, b in itertools.pairwise(bounds)]

    def train(self, console: Console) -> TrainResult:
        result = TrainResult(steps=self.total_steps, resumed_from=self._load_checkpoint())
        result.losses = self._loaded_losses
        previous = signal.signal(signal.SIGTERM, self._request_stop)
        self.trunk.train()
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
                    loss, tokens, stops = self.parallel.total(loss, tokens, float(self._stop_requested))
                    result.losses.append((step + 1, loss))
                    result.tokens += int(tokens)
                    result.seconds = time.monotonic() - started
                    progress.update(task, advance=1, loss=loss, tps=result.tokens_per_second)
                    done = step + 1
                    if done % self.settings.checkpoint_every == 0 or done == self.total_steps or stops:
                        self._save_checkpoint(done, result.losses)
                    if stops:
                        result.interrupted = True
                        break
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.trunk.eval()
        return result

    def accumulate(self, indices: list[int]) -> tuple[float, int]:
        """Forward and backward over this process's share of the step, in micro-batches: the gradients add up,
        over the micro-batches and the processes, to those of the whole step."""
        num_tokens = labelled_tokens([self.examples[i] for i in indices])
        return self._accumulate(self.examples, self.parallel.share(indices), num_tokens, self.teacher, self.settings)

    def _accumulate(
        self,
        examples: Sequence[Example],
        indices: list[int],
        num_tokens: float,
        teacher: TeacherSignal | None,
        settings: DistillSection,
    ) -> tuple[float, int]:
        weight = 1.0
        if not indices:  # no example of the step here, yet this process must join the gradient all-reduce
            examples, indices, teacher, settings, weight = self.examples, [0], self.teacher, self.settings, 0.0
        total, tokens = 0.0, 0
        parts = self.micro_batches(indices)
        device = self.parallel.device
        for number, part in enumerate(parts):
            batch = make_batch([examples[i] for i in part], self.pad_id, settings.packing, settings.max_seq_len)
            batch = batch.to(device)
            with self.parallel.no_sync(self.trunk, skip=number < len(parts) - 1):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    loss = batch_loss(self.model, batch, part, teacher, settings, max(num_tokens, 1), self.trunk)
                self.parallel.backward(loss.loss * weight)
            total += float(loss.loss.detach()) * weight
            tokens += batch.tokens * int(weight)
        return total, tokens

    def _step(self, step: int) -> tuple[float, int]:
        indices = self.batch_indices(step)
        if self.on_policy is not None and self.on_policy.applies(step):
            share = self.parallel.share(indices)
            sampled, teacher = self.on_policy.sample(self.model, share, step) if share else ([], None)
            (num_tokens,) = self.parallel.total(labelled_tokens(sampled))
            divergence_only = self.settings.model_copy(update={"kd_ratio": 1.0})
            loss, tokens = self._accumulate(sampled, list(range(len(sampled))), num_tokens, teacher, divergence_only)
        else:
            loss, tokens = self.accumulate(indices)
        self.parallel.clip(self.trunk, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, tokens

    def _data_order(self) -> dict[str, int]:
        settings = self.settings
        return {
            "seed": settings.seed,
            "examples": len(self.examples),
            "batch_size": settings.batch_size,
            "processes": self.parallel.processes,
        }

    def _request_stop(self, signum: int, frame: object) -> None:
        self._stop_requested = True

    # checkpoints ------------------------------------------------------------------
    # state.pt holds what all processes share (weights, schedule, losses); rank-<r>.pt each process's own
    # optimizer state (a shard under FSDP or ZeRO-3) and random generator.
    def weights(self) -> dict[str, Tensor]:
        """The student's whole state dict (gathered under FSDP or ZeRO-3); every process calls it."""
        return {name.removeprefix("model."): value for name, value in self.parallel.full_state(self.trunk).items()}

    def _trainable_state(self) -> dict[str, Tensor]:
        trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.weights().items() if k in trainable}

    def _save_checkpoint(self, step: int, losses: list[tuple[int, float]]) -> None:
        parallel = self.parallel
        partial = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".partial")
        weights = self._trainable_state()
        if parallel.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        parallel.barrier()
        if parallel.is_main:
            shared = {"step": step, "losses": losses, "model": weights, "data_order": self._data_order()}
            torch.save({**shared, "scheduler": self.scheduler.state_dict()}, partial / "state.pt")
        own = {"optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state()}
        torch.save(own, partial / f"rank-{parallel.rank}.pt")
        parallel.barrier()
        if parallel.is_main:
            # Swap in the new checkpoint only once it is complete on disk.
            old = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if self.checkpoint_dir.exists():
                os.replace(self.checkpoint_dir, old)
            os.replace(partial, self.checkpoint_dir)
            shutil.rmtree(old, ignore_errors=True)
        parallel.barrier()

    def _load_checkpoint(self) -> int:
        self._loaded_losses: list[tuple[int, float]] = []
        folder = self.checkpoint_dir
        if not (folder / "state.pt").is_file():
            folder = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".old")
            if not (folder / "state.pt").is_file():
                return 0
        path = folder / "state.pt"
        state = _load_checkpoint_file(path)
        if state.get("data_order") != self._data_order():
            raise AlambicError(
                f"{path}: a checkpoint of another data order or number of processes ({state.get('data_order')}); "
                "resume with the same settings and --processes, or delete it"
            )
        own = _load_checkpoint_file(folder / f"rank-{self.parallel.rank}.pt")
        self._load_trainable(path, state["model"])
        self.optimizer.load_state_dict(own["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(own["rng"])
        self._loaded_losses = [(int(step), float(loss)) for step, loss in state["losses"]]
        return int(state["step"])

    def _load_trainable(self, path: Path, saved: dict[str, Tensor]) -> None:
        """The checkpoint's weights into the student, strictly: the checkpoint holds exactly its trainable
        weights (frozen ones are not saved), each of the same shape."""
        trainable = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(trainable.keys() - saved.keys()), sorted(saved.keys() - trainable.keys())
        reshaped = [name for name in trainable.keys() & saved.keys() if saved[name].shape != trainable[name].shape]
        if missing or unexpected or reshaped:
            first = (missing or unexpected or reshaped)[0]
            raise AlambicError(
                f"{path}: a checkpoint of another student ({len(missing)} weights missing, {len(unexpected)} "
                f"unexpected, {len(reshaped)} of another shape, e.g. {first}); resume with the same base, "
                "prune_layers and lora settings, or delete it"
            )
        self.model.load_state_dict(saved, strict=False)


def _load_checkpoint_file(path: Path) -> dict[str, Any]:
    """A checkpoint file, read without running any pickled code: tensors, numbers, strings and containers only."""
    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AlambicError(f"{path}: not a checkpoint alambic can read ({reason}); delete it to start over") from exc
