"""SIGKILL in the middle of synth and of distill, then run again: the work continues where it stopped."""

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch

from alambic.store import Ledger

from .conftest import ALAMBIC, GROUNDED_ONLY, run_cli, small_config, write_project

pytestmark = pytest.mark.integration
SYNTH = "max_chunks = 5\nquestions_per_chunk = 2\nmax_answer_tokens = 64\nheldout_fraction = 0.2\n" + GROUNDED_ONLY


def count(project: Path, kind: str) -> int:
    path = project / ".alambic" / "ledger.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM items WHERE kind = ?", (kind,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def kill_when(command: list[str], ready, timeout: float = 300) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, "finished before it could be killed"
            assert time.monotonic() < deadline, "never reached the point to kill it"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def items(project: Path) -> dict[str, tuple]:
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        return {i.key: (i.status, i.reason, i.payload.get("answer")) for i in ledger.items("synth")}


def test_synth_killed_midway_ends_equal_to_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = small_config(tiny_model_dir, synth=SYNTH)
    straight = write_project(tmp_path / "straight", config)
    killed = write_project(tmp_path / "killed", config)
    run_cli("synth", "--project", straight)
    expected = items(straight)

    kill_when([*ALAMBIC, "synth", "--project", str(killed)], lambda: count(killed, "qa") >= 2)
    partial = count(killed, "qa")
    assert 2 <= partial < count(straight, "qa")
    run_cli("synth", "--project", killed)

    assert items(killed) == expected
    db = sqlite3.connect(killed / ".alambic" / "ledger.sqlite")
    pairs = db.execute(
        "SELECT json_extract(payload, '$.chunk'), json_extract(payload, '$.question'), COUNT(*) "
        "FROM items WHERE kind = 'qa' GROUP BY 1, 2 HAVING COUNT(*) > 1"
    ).fetchall()
    assert pairs == []


def test_distill_killed_midway_resumes_from_its_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    distill = (
        f'base = "{tiny_model_dir}"\nprune_layers = 2\nepochs = 12\nbatch_size = 2\ncheckpoint_every = 1\n'
        "precision = 'fp32'"
    )
    config = small_config(tiny_model_dir, synth=SYNTH, distill=distill)
    straight = write_project(tmp_path / "straight", config)
    killed = write_project(tmp_path / "killed", config)
    for project in (straight, killed):
        run_cli("synth", "--project", project)
    run_cli("distill", "--project", straight)
    artifacts = killed / ".alambic" / "artifacts"

    def checkpoint_step() -> int:
        try:
            state = next(artifacts.glob("distill-*/checkpoint/state.pt"))
            return torch.load(state, weights_only=True)["step"]
        except (StopIteration, OSError, RuntimeError, EOFError):
            return 0

    kill_when([*ALAMBIC, "distill", "--project", str(killed)], lambda: checkpoint_step() >= 3)
    done = run_cli("distill", "--project", killed)
    assert "resuming" in done.stderr

    with (
        Ledger(straight / ".alambic" / "ledger.sqlite") as a,
        Ledger(killed / ".alambic" / "ledger.sqlite") as b,
    ):
        expected, resumed = a.latest_done("distill").summary, b.latest_done("distill").summary
    assert resumed["resumed_from_step"] >= 3
    assert [step for step, _ in resumed["losses"]] == list(range(1, expected["steps"] + 1))
    losses = [loss for _, loss in resumed["losses"]]
    assert losses == pytest.approx([loss for _, loss in expected["losses"]], rel=1e-4, abs=1e-4)
