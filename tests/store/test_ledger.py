import sqlite3
from pathlib import Path

import pytest
from pydantic import BaseModel

from alambic.errors import AlambicError
from alambic.store import Artifact, Item, Ledger, Selected
from alambic.store.ledger import MIGRATIONS


def test_new_ledger_is_wal_and_at_latest_schema(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.schema_version == len(MIGRATIONS)
    mode = sqlite3.connect(tmp_path / "ledger.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_items_are_idempotent_by_key(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        first = Item("k1", "run", "synth", "qa", "ok", {"text": "مرحبا بكم"})
        assert ledger.put_item(first) is True
        assert ledger.put_item(Item("k1", "run", "synth", "qa", "ok", {"text": "changed"})) is False
        stored = ledger.item("k1")
        assert stored is not None and stored.payload == {"text": "مرحبا بكم"}
        assert [item.key for item in ledger.items("synth", "qa")] == ["k1"]


def test_lineage_reaches_every_ancestor(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.put_item(Item("doc", "-", "synth", "document", "ok", {}))
        ledger.put_item(Item("chunk", "-", "synth", "chunk", "ok", {}), parents=["doc"])
        ledger.put_item(Item("qa", "r", "synth", "qa", "ok", {}), parents=["chunk"])
        ledger.add_artifact(Artifact("dataset", "r", "dataset", "/x", None, 0, {}, 0.0), parents=["qa"])
        assert ledger.ancestors("dataset") == {"qa", "chunk", "doc"}
        assert ledger.parents("dataset") == ["qa"]


def test_runs_reopen_after_a_crash_and_stay_done_once_done(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        assert ledger.start_run("r1", "synth", "c", "i").state == "running"
    with Ledger(path) as ledger:
        assert ledger.start_run("r1", "synth", "c", "i").state == "running"
        ledger.finish_run("r1", Counted(n=1), [Selected("a", "qa", "train"), Selected("b", "qa", "heldout")])
        assert ledger.start_run("r1", "synth", "c", "i").state == "done"
        run = ledger.latest_done("synth")
        assert run.summary == {"n": 1} and run.result(Counted) == Counted(n=1)
        assert ledger.selection("r1") == [Selected("a", "qa", "train"), Selected("b", "qa", "heldout")]


def test_a_finished_run_a_stage_reuses_is_the_latest_again(tmp_path: Path) -> None:
    """Set a key back to what it was: the stage reuses its first run, and the next stage must build on that one."""
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        for run_id in ("three-epochs", "five-epochs"):
            ledger.start_run(run_id, "distill", run_id, "d")
            ledger.finish_run(run_id, Counted(n=1))
        assert ledger.latest_done("distill").id == "five-epochs"
        finished = ledger.run("three-epochs").finished_at
        assert ledger.start_run("three-epochs", "distill", "three-epochs", "d").state == "done"
        latest = ledger.latest_done("distill")
        assert latest.id == "three-epochs" and latest.finished_at == finished  # when it finished stays true


def test_runs_of_an_older_ledger_are_chosen_in_the_order_they_finished(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        for run_id in ("first", "second"):
            ledger.start_run(run_id, "distill", run_id, "d")
            ledger.finish_run(run_id, Counted(n=1))
    db = sqlite3.connect(path)
    version = len(MIGRATIONS)
    db.executescript(f"ALTER TABLE runs DROP COLUMN chosen_at; DELETE FROM schema_migrations WHERE version = {version}")
    db.close()
    with Ledger(path) as ledger:
        assert ledger.schema_version == version
        assert ledger.latest_done("distill").id == "second"
        assert all(run.chosen_at == run.finished_at for run in ledger.runs())


class Counted(BaseModel):
    n: int


class Named(BaseModel):
    name: str


def test_a_summary_of_another_shape_is_one_line_naming_the_run_and_field(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.start_run("r1", "synth", "c", "i")
        ledger.finish_run("r1", Counted(n=1))
        with pytest.raises(AlambicError, match=r"^run r1: its summary is not a Named \(name: Field required\)$"):
            ledger.latest_done("synth").result(Named)


def test_a_ledger_from_a_newer_alambic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    db.commit()
    db.close()
    with pytest.raises(AlambicError, match="newer than this alambic"):
        Ledger(path)


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AlambicError, match=r"ledger\.sqlite"):
        Ledger(path)
