"""Data-parallel distillation: N processes (torchrun on CPU, gloo) train exactly as one process does."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alambic.dataset import latest_synth_run, split_items
from alambic.distill.parallel import STRATEGIES, launch_command, launch_config, share
from alambic.store import Ledger

from ..conftest import mock_teacher, run_cli, small_config, write_project


def test_shares_split_a_step_into_contiguous_parts_that_cover_it() -> None:
    indices = [7, 3, 9, 1, 4]
    parts = [share(indices, rank, 2) for rank in range(2)]
    assert parts == [[7, 3, 9], [1, 4]] or parts == [[7, 3], [9, 1, 4]]
    assert [share([5], rank, 2) for rank in range(2)] in ([[5], []], [[], [5]])
    assert share(indices, 0, 1) == indices


def test_the_shipped_launch_configs_exist_and_name_their_strategy() -> None:
    kinds = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}
    for strategy in STRATEGIES:
        assert f"distributed_type: {kinds[strategy]}" in launch_config(strategy).read_text()


def test_on_cpu_only_ddp_can_be_launched(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    command, environment = launch_command(tmp_path, None, 2, "ddp")
    assert "torch.distributed.run" in command and "--nproc_per_node" in command
    assert environment == {"ACCELERATE_USE_CPU": "true"}
    with pytest.raises(Exception, match="GPUs"):
        launch_command(tmp_path, None, 2, "fsdp")


def summary(project: Path) -> dict:
    db = sqlite3.connect(project / ".alambic" / "ledger.sqlite")
    try:
        (row,) = db.execute("SELECT summary FROM runs WHERE stage = 'distill' AND state = 'done'").fetchall()
    finally:
        db.close()
    return json.loads(row[0])


@pytest.mark.integration
def test_two_processes_compute_the_same_losses_and_weights_as_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    distill = (
        f'base = "{tiny_model_dir}"\nteacher_model = "{tiny_model_dir}"\nmethod = "kd"\nprune_layers = 2\n'
        'epochs = 2\nbatch_size = 4\ngrad_accumulation = 2\nprecision = "fp32"\ncheckpoint_every = 2'
    )
    # The mock teacher's data: the embedded teacher's accepted answers vary in number from build to build.
    with mock_teacher() as url:
        teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'\nconcurrency = 8"
        one = write_project(tmp_path / "one", small_config(tiny_model_dir, distill=distill, teacher=teacher))
        run_cli("synth", "--project", one)
    with Ledger(one / ".alambic" / "ledger.sqlite") as ledger:
        examples = len(split_items(ledger, latest_synth_run(ledger))["train"])
    assert examples >= 4
    # Each epoch ends with a step of one example: the second process has none and must still take part.
    config = one / "alambic.toml"
    config.write_text(config.read_text().replace("batch_size = 4", f"batch_size = {examples - 1}"))
    two = tmp_path / "two"
    shutil.copytree(one, two)
    run_cli("distill", "--project", one)
    run_cli("distill", "--project", two, "--processes", "2")

    single, double = summary(one), summary(two)
    assert (single["processes"], double["processes"]) == (1, 2)
    assert double["steps"] == single["steps"] >= 4 and double["train_tokens"] == single["train_tokens"]
    for (step, loss), (other_step, other_loss) in zip(single["losses"], double["losses"], strict=True):
        assert step == other_step and other_loss == pytest.approx(loss, rel=1e-5)
    weights = load_file(Path(single["student_dir"]) / "model.safetensors")
    others = load_file(Path(double["student_dir"]) / "model.safetensors")
    assert weights.keys() == others.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(others[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("batch_size", [5, 1])
def test_two_processes_accumulate_the_gradients_of_one(tmp_path: Path, tiny_model_dir: Path, batch_size: int) -> None:
    """Adam and gradient clipping hide a gradient off by a constant factor from the loss curve: compare gradients.
    With a batch of one, the second process has no example and must still join the all-reduce."""
    worker = Path(__file__).with_name("parallel_worker.py")
    args = [str(tiny_model_dir), str(tmp_path / "one.pt"), str(batch_size)]
    subprocess.run([sys.executable, str(worker), *args], check=True, capture_output=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args[1] = str(tmp_path / "two.pt")
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    subprocess.run([*launcher, str(worker), *args], check=True, capture_output=True, env=environment)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    # Compared in fp32 (the worker forces it, whatever the CPU): the loss sums one rounded term per token, and two
    # processes add them in another order, through matmuls of other shapes, whose kernels also differ between
    # CPUs. Re-ordering a sum of n terms each rounded at fp32's epsilon moves it by up to about n·eps, relative
    # (seen: 1.1e-6 on a CPU with avx512_bf16). A lost or doubled share would move it by a factor.
    assert two["tokens"] == one["tokens"]
    assert two["loss"] == pytest.approx(one["loss"], rel=one["tokens"] * torch.finfo(torch.float32).eps)
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 10
    for name, grad in one["grads"].items():
        # Each process runs one thread (torchrun's default), so sums run in another order: float noise only.
        scale = float(grad.abs().max())
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-3, atol=1e-4 * scale, msg=name)
