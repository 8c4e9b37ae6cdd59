"""A ledger written by alambic before typed stage results (schema v3, commit fbb8e9c) opens, is migrated,
and gives the stages after it the same dataset the old code read."""

import json
import shutil
import sqlite3
from pathlib import Path

from alambic.dataset import FAQ_KIND, latest_synth_run, split_items
from alambic.results import CurateResult, DistillResult, EvalResult, ReleaseResult, SynthResult
from alambic.store import Ledger
from alambic.store.ledger import MIGRATIONS

from .conftest import run_cli

OLD = Path(__file__).parent / "data" / "ledger-v3"  # made by tests/data/make_ledger_v3.py at fbb8e9c
RESULTS = {
    "synth": SynthResult,
    "curate": CurateResult,
    "distill": DistillResult,
    "evaluate": EvalResult,
    "release": ReleaseResult,
}


def old_project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    shutil.copytree(OLD / "docs", root / "docs")
    shutil.copy(OLD / "alambic.toml", root / "alambic.toml")
    (root / ".alambic").mkdir()
    shutil.copy(OLD / "ledger.sqlite", root / ".alambic" / "ledger.sqlite")
    return root


def test_an_old_ledger_is_migrated_and_reads_the_same_dataset(tmp_path: Path) -> None:
    root = old_project(tmp_path)
    ledger_path = root / ".alambic" / "ledger.sqlite"
    assert sqlite3.connect(ledger_path).execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == 3

    status = json.loads(run_cli("status", "--json", "--project", root).stdout)
    assert status["schema_version"] == len(MIGRATIONS)

    expected = json.loads((OLD / "expected.json").read_text(encoding="utf-8"))
    with Ledger(ledger_path) as ledger:
        runs = [run for run in ledger.runs() if run.state == "done"]
        assert sorted({run.stage for run in runs}) == sorted(RESULTS)
        for run in runs:
            run.result(RESULTS[run.stage])  # every summary the old code wrote is a valid typed result
        synth_run = latest_synth_run(ledger)
        assert ledger.unrecorded_selections() == []
        dataset = split_items(ledger, synth_run)
        assert {split: [item.key for item in items] for split, items in dataset.items()} == expected
        result = synth_run.result(SynthResult)
        assert len(ledger.selection(synth_run.id)) == sum(recipe.selected for recipe in result.recipes.values())


def test_the_stages_find_their_old_runs_done(tmp_path: Path) -> None:
    root = old_project(tmp_path)
    assert "already done, skipped" in run_cli("eval", "--project", root).stderr
    # Answer facts and FAQ items came after this ledger: synth runs again for them (the FAQ items cost no teacher
    # call), and every item it had is kept.
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        old_selection = [chosen.key for chosen in ledger.selection(latest_synth_run(ledger).id)]
        paid = ledger.usage()
    assert "already done" not in run_cli("synth", "--project", root).stderr
    with Ledger(root / ".alambic" / "ledger.sqlite") as ledger:
        selection = ledger.selection(latest_synth_run(ledger).id)
        assert [chosen.key for chosen in selection if chosen.kind != FAQ_KIND] == old_selection
        assert {chosen.kind for chosen in selection if chosen.key not in old_selection} == {FAQ_KIND}
        new_purposes = {recipe for _, recipe, *_ in ledger.usage()} - {recipe for _, recipe, *_ in paid}
        assert new_purposes == {"fact"} and set(ledger.usage()) >= {row for row in paid if row[1] != "fact"}
        assert latest_synth_run(ledger).summary["facts"]
    assert run_cli("data", "export", tmp_path / "review.jsonl", "--project", root).returncode == 0
    rows = (tmp_path / "review.jsonl").read_text(encoding="utf-8").splitlines()
    expected = json.loads((OLD / "expected.json").read_text(encoding="utf-8"))
    assert len(rows) >= len(expected["train"]) + len(expected["heldout"])
