"""synth on Ray (a local Ray on this machine, two workers, two mock replicas) against the local backend."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from alambic import synth
from alambic.dataset import latest_synth_run, split_items
from alambic.errors import AlambicError
from alambic.project import Project
from alambic.store import Item, Ledger
from alambic.store.ledger import StoredResponse
from alambic.synth.distributed import MISSING_RAY, import_ray, merge_shards, plan_wave

from ..conftest import FULL_MIX, mock_teacher, run_cli, small_config, write_project

ray = pytest.importorskip("ray")

RAY_ENV = {"RAY_DEDUP_LOGS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One small local Ray for the module: starting it takes several seconds."""
    saved = {name: os.environ.get(name) for name in RAY_ENV}
    os.environ.update(RAY_ENV)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(mock_teacher()) for _ in range(2)]


def project(root: Path, urls: list[str], backend: str, address: str | None = None) -> Project:
    teacher = f"backend = 'openai'\nbase_url = {json.dumps(urls)}\nmodel = 'mock'\nconcurrency = 8"
    scale = f'backend = "{backend}"\nworkers = 2' + (f'\naddress = "{address}"' if address else "")
    # synth never reads the student's settings, so the distill section may name a model that is not there.
    write_project(root, small_config(Path("no-student"), synth=FULL_MIX, teacher=teacher, scale=scale))
    return Project.open(root)


def selected(root: Path) -> dict[str, list[tuple[str, list]]]:
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        data = split_items(ledger, latest_synth_run(ledger))
        return {split: [(i.key, i.payload["messages"]) for i in items] for split, items in data.items()}


def paid(urls: list[str]) -> list[int]:
    return [httpx.get(url.removesuffix("/v1") + "/stats").json()["requests"] for url in urls]


def test_ray_selects_what_local_selects_and_a_rerun_pays_nothing(
    tmp_path: Path, local_ray: None, replicas: list[str]
) -> None:
    quiet = Console(quiet=True)
    local = project(tmp_path / "local", replicas, "local")
    synth.run(local, quiet)
    before = paid(replicas)
    # The command joins the running Ray as a driver of its own, as it would join a cluster with address = "auto".
    on_ray = project(tmp_path / "ray", replicas, "ray", ray.get_runtime_context().gcs_address)
    run_cli("synth", "--project", on_ray.root)
    after = paid(replicas)
    assert all(b > a for a, b in zip(before, after, strict=True)), "each worker talks to its own replica"
    expected = selected(tmp_path / "local")
    assert sum(len(items) for items in expected.values()) == 48 + 5  # the mix, and 5 FAQ sections of its chunks
    assert selected(on_ray.root) == expected
    with Ledger(on_ray.state_dir / "ledger.sqlite") as ledger:
        recipes = latest_synth_run(ledger).summary["recipes"]
    assert {name: r["selected"] for name, r in recipes.items()} == {name: r["target"] for name, r in recipes.items()}
    assert not list((on_ray.root / ".alambic" / "shards").glob("*")), "every shard was merged and removed"

    assert synth.run(Project.open(on_ray.root), quiet).skipped
    with closing(sqlite3.connect(on_ray.root / ".alambic" / "ledger.sqlite")) as db, db:
        db.execute("UPDATE runs SET state = 'failed' WHERE stage = 'synth'")  # as if it had crashed at the end
    with Ledger(on_ray.root / ".alambic" / "shards" / "crashed-00000.sqlite") as left_behind:
        left_behind.put_item(Item("left-behind", "crashed", "synth", "note", "ok", {}))
    again = synth.run(Project.open(on_ray.root), quiet)
    assert not again.skipped and paid(replicas) == after, "the workers found every answer in the ledger"
    assert selected(on_ray.root) == expected
    with Ledger(on_ray.root / ".alambic" / "ledger.sqlite") as ledger:
        assert ledger.item("left-behind") is not None, "a crashed run's shard is merged before the next starts"
    assert not list((on_ray.root / ".alambic" / "shards").glob("*"))


def test_merging_a_shard_twice_changes_nothing(tmp_path: Path) -> None:
    main, shard = tmp_path / "ledger.sqlite", tmp_path / "shards" / "run-00000.sqlite"
    with Ledger(main) as ledger:
        ledger.put_item(item("retried", "failed"))
        ledger.put_item(item("kept", "ok"))
    with Ledger(shard) as ledger:
        ledger.put_item(item("retried", "ok"))
        ledger.put_item(item("kept", "failed"))
        ledger.put_item(item("new", "ok"), ["kept"])
        answer = StoredResponse("text", "stop", 3, 4, "http://replica")
        ledger.put_response("r1", "mock", "grounded-qa", {"messages": []}, answer, 0.2, [{"token": "a"}])
    spare = tmp_path / "copy.sqlite"
    shutil.copy(shard, spare)

    assert merge_shards(main, [shard]) == 2 and not shard.exists()
    once = dump(main)
    assert merge_shards(main, [spare]) == 0
    assert dump(main) == once
    with Ledger(main) as ledger:
        assert {i.key: i.status for i in ledger.items()} == {"retried": "ok", "kept": "ok", "new": "ok"}
        assert ledger.parents("new") == ["kept"] and ledger.logprobs("r1") == [{"token": "a"}]


def test_waves_follow_acceptance_and_budget() -> None:
    from alambic.synth.recipes import Fill

    class Fake:
        name, group_size = "fake", 4

        def max_groups(self) -> int:
            return 10

    fill = Fill(Fake(), target=20)  # type: ignore[arg-type]
    assert [groups for _, groups in plan_wave([fill], 256)] == [range(0, 5)]
    fill.finished, fill.accepted = 5, 5  # one accepted item per group: 15 more groups needed, 5 left in budget
    assert [groups for _, groups in plan_wave([fill], 256)] == [range(5, 10)]
    assert plan_wave([fill], 256) == []


def test_ray_backend_without_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AlambicError, match="pip install 'alambic\\[ray\\]'") as caught:
        import_ray()
    assert str(caught.value) == MISSING_RAY


def item(key: str, status: str) -> Item:
    return Item(key, "run", "synth", "qa", status, {"status": status}, None if status == "ok" else "teacher_error: x")


def dump(path: Path) -> dict[str, list]:
    with closing(sqlite3.connect(path)) as db:
        tables = ("items", "lineage", "responses", "logprobs")
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
