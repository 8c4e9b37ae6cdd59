"""Each bad input exits non-zero with one line naming the file or key, and leaves the ledger readable."""

import sqlite3
from pathlib import Path

import pytest

from alambic.store import Ledger

from .conftest import run_cli, small_config, write_project
from .documents import files


def assert_one_line_error(project: Path, *args: str, mentions: str) -> None:
    done = run_cli(*args, "--project", project, check=False, timeout=300)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert mentions in lines[0]
    db = sqlite3.connect(project / ".alambic" / "ledger.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


@pytest.fixture
def project(tmp_path: Path, tiny_model_dir: Path) -> Path:
    root = write_project(tmp_path / "shop", small_config(tiny_model_dir))
    Ledger(root / ".alambic" / "ledger.sqlite").close()
    return root


def test_missing_docs_folder(project: Path) -> None:
    for path in (project / "docs").iterdir():
        path.unlink()
    (project / "docs").rmdir()
    assert_one_line_error(project, "synth", mentions=str(project / "docs"))


def test_empty_docs_folder(project: Path) -> None:
    for path in (project / "docs").iterdir():
        path.unlink()
    assert_one_line_error(project, "synth", mentions="no documents")


def test_binary_document(project: Path) -> None:
    (project / "docs" / "logo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert_one_line_error(project, "synth", mentions="logo.txt: binary file")


def test_non_utf8_document(project: Path) -> None:
    (project / "docs" / "legacy.md").write_bytes("Caf\u00e9 opening hours".encode("latin-1"))
    assert_one_line_error(project, "synth", mentions="legacy.md: not UTF-8")


def test_unparseable_config(project: Path) -> None:
    (project / "alambic.toml").write_text("[synth\nchunk_chars = 900\n", encoding="utf-8")
    assert_one_line_error(project, "synth", mentions="alambic.toml: invalid TOML")


def test_unknown_key(project: Path) -> None:
    (project / "alambic.toml").write_text("[synth]\nchunk_size = 900\n", encoding="utf-8")
    assert_one_line_error(project, "synth", mentions="[synth.chunk_size]")


def test_wrong_type(project: Path) -> None:
    (project / "alambic.toml").write_text("[distill]\nprune_layers = 'eight'\n", encoding="utf-8")
    assert_one_line_error(project, "distill", mentions="[distill.prune_layers]")


def test_teacher_url_that_does_not_answer(project: Path, tiny_model_dir: Path) -> None:
    teacher = 'backend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "llama-3.1-70b"\ntimeout_s = 5'
    (project / "alambic.toml").write_text(small_config(tiny_model_dir, teacher=teacher), encoding="utf-8")
    assert_one_line_error(project, "synth", mentions="teacher.base_url http://127.0.0.1:9/v1 does not answer")


def test_gguf_path_that_does_not_exist(project: Path, tiny_model_dir: Path) -> None:
    teacher = 'backend = "llamacpp"\nmodel = "models/teacher.gguf"'
    (project / "alambic.toml").write_text(small_config(tiny_model_dir, teacher=teacher), encoding="utf-8")
    assert_one_line_error(project, "synth", mentions=f"teacher.model: {project / 'models/teacher.gguf'}")


def test_stage_before_its_inputs_exist(project: Path) -> None:
    assert_one_line_error(project, "distill", mentions="run `alambic synth` first")


def test_unknown_recipe(project: Path) -> None:
    (project / "alambic.toml").write_text('[synth]\nrecipes = { "grounded-qa" = 1, "poetry" = 1 }\n', encoding="utf-8")
    assert_one_line_error(project, "synth", mentions="unknown recipe 'poetry'")


def test_self_instruct_without_seed_tasks(project: Path) -> None:
    (project / "alambic.toml").write_text('[synth]\nrecipes = { "self-instruct" = 1 }\n', encoding="utf-8")
    assert_one_line_error(project, "synth", mentions="synth.seed_tasks")


def test_import_file_that_does_not_exist(project: Path, tiny_model_dir: Path) -> None:
    synth = 'max_chunks = 2\nimport_paths = ["logs/chats.jsonl"]'
    (project / "alambic.toml").write_text(small_config(tiny_model_dir, synth=synth), encoding="utf-8")
    assert_one_line_error(project, "synth", mentions="logs/chats.jsonl does not exist")


def test_curate_before_synth(project: Path) -> None:
    assert_one_line_error(project, "curate", mentions="run `alambic synth` first")


def test_review_file_that_does_not_exist(project: Path) -> None:
    assert_one_line_error(project, "data", "import", "review.csv", mentions="review.csv: does not exist")


@pytest.mark.parametrize("case", list(files.UNREADABLE))
def test_unreadable_document_ingests_nothing(project: Path, case: str) -> None:
    """The other documents are fine, and come first; still nothing of them is recorded."""
    make, message = files.UNREADABLE[case]
    make(project / "docs")
    assert_one_line_error(project, "synth", mentions=message)
    db = sqlite3.connect(project / ".alambic" / "ledger.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    finally:
        db.close()
