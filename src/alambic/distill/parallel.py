"""Data parallelism through accelerate: one process per device, each training on a share of every step.

A step's loss is a sum over its labelled rows divided by the step's token count, which every process knows
(it holds all the examples). Each process backpropagates its share of that sum; DDP, FSDP and ZeRO all
average the gradients over the processes, so each share is scaled by the number of processes first. The
gradients are then those of the whole step in one process, whatever the number of processes.

Launch with ``alambic distill --processes N`` (or ``accelerate launch`` with a config from `configs/`). In a
single process, `Parallel` changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from alambic.errors import AlambicError

STRATEGIES = ("ddp", "fsdp", "zero3")


def launch_config(strategy: str) -> Path:
    """The accelerate config shipped for a strategy (ddp, fsdp or zero3)."""
    return Path(str(resources.files("alambic.distill") / "configs" / f"{strategy}.yaml"))


def share(indices: Sequence[int], rank: int, processes: int) -> list[int]:
    """Process `rank`'s contiguous part of a step's examples, as even in size as the parts can be (maybe none)."""
    bounds = [round(i * len(indices) / processes) for i in range(processes + 1)]
    return list(indices[bounds[rank] : bounds[rank + 1]])


class Parallel:
    def __init__(self) -> None:
        from accelerate import Accelerator

        self.accelerator = Accelerator()
        self.rank = self.accelerator.process_index
        self.processes = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device

    def share(self, indices: Sequence[int]) -> list[int]:
        return share(indices, self.rank, self.processes)

    def prepare(self, model: Any, optimizer: torch.optim.Optimizer) -> tuple[Any, torch.optim.Optimizer]:
        if self.processes == 1:
            return model.to(self.device), optimizer
        return self.accelerator.prepare(model, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        if self.processes == 1:
            loss.backward()
        else:
            self.accelerator.backward(loss * self.processes)

    def no_sync(self, model: Any, skip: bool) -> contextlib.AbstractContextManager[None]:
        """Skip the gradient all-reduce of a micro-batch that is not the step's last."""
        if self.processes == 1 or not skip:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def clip(self, model: Any, max_norm: float) -> None:
        if self.processes == 1:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        else:
            self.accelerator.clip_grad_norm_(model.parameters(), max_norm)

    def total(self, *values: float) -> list[float]:
        """Each value summed over the processes."""
        if self.processes == 1:
            return list(values)
        summed = self.accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=self.device), "sum")
        return [float(v) for v in summed.tolist()]

    def full_state(self, model: Any) -> dict[str, torch.Tensor]:
        """The whole model's weights (gathered on the main process under FSDP or ZeRO-3); every process calls it."""
        if self.processes == 1:
            return model.state_dict()
        return self.accelerator.get_state_dict(model)

    def barrier(self) -> None:
        if self.processes > 1:
            self.accelerator.wait_for_everyone()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process does the block first (writing the ledger and files), then the others (finding them)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def launch_command(
    project: Path, preset: str | None, processes: int, strategy: str
) -> tuple[list[str], dict[str, str]]:
    """The command (and extra environment) that runs `alambic distill` in `processes` processes."""
    stage = ["-m", "alambic", "distill", "--project", str(project), *(["--preset", preset] if preset else [])]
    if torch.cuda.is_available():
        config = ["--config_file", str(launch_config(strategy)), "--num_processes", str(processes)]
        return [sys.executable, "-m", "accelerate.commands.launch", *config, *stage], {}
    if strategy != "ddp":
        raise AlambicError(f"--strategy {strategy} shards the student over GPUs and this machine has none; use ddp")
    # accelerate launch runs CPU processes only through MPI; torchrun is what it runs for GPUs.
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*launcher, *stage], {"ACCELERATE_USE_CPU": "true"}


def launched() -> bool:
    """Whether this process is one of a launched group (torchrun or accelerate launch)."""
    return "LOCAL_RANK" in os.environ
