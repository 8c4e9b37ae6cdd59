"""Bad safety settings and guards: one-line errors that name the key or endpoint, and an intact ledger."""

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from ..conftest import free_port, run_cli

pytestmark = pytest.mark.integration


def copy_with(finished_project: Path, tmp_path: Path, extra: str) -> Path:
    project = tmp_path / "shop"
    shutil.copytree(finished_project, project, ignore=shutil.ignore_patterns("releases"))
    toml = project / "alambic.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return project


def one_line_error(project: Path, stage: str) -> str:
    done = run_cli(stage, "--project", project, check=False, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    return lines[0]


def runs(project: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(project / ".alambic" / "ledger.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT id, state FROM runs ORDER BY id").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(
    ("extra", "stage", "mentions"),
    [
        ("min_served_refusal = 1.5", "release", "[release.gate.min_served_refusal]"),
        ("max_served_over_refusal = -0.1", "release", "[release.gate.max_served_over_refusal]"),
        ('[safety.guard]\nbackend = "openai"\n', "safety", "guard backend 'openai' needs base_url"),
        ("[safety.guard]\ntarget_fpr = 0\n", "safety", "[safety.guard.target_fpr]"),
    ],
)
def test_settings_out_of_range(finished_project: Path, tmp_path: Path, extra: str, stage: str, mentions: str) -> None:
    if extra.startswith("["):
        project = copy_with(finished_project, tmp_path, "\n" + extra)
    else:  # a key of the test project's own [release.gate]: changed in place
        project = copy_with(finished_project, tmp_path, "")
        toml = project / "alambic.toml"
        key = extra.split(" = ")[0]
        text = re.sub(rf"^{key} = .*$", extra, toml.read_text(encoding="utf-8"), flags=re.MULTILINE)
        toml.write_text(text, encoding="utf-8")
    before = runs(project)
    assert mentions in one_line_error(project, stage)
    assert runs(project) == before


def test_a_missing_guard_endpoint(finished_project: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    project = copy_with(finished_project, tmp_path, f'\n[safety.guard]\nbackend = "openai"\nbase_url = "{url}"\n')
    before = runs(project)
    assert f"safety.guard.base_url {url} does not answer" in one_line_error(project, "safety")
    assert runs(project) == before


def test_a_guard_that_answers_nonsense(finished_project: Path, tmp_path: Path, llama_server: str) -> None:
    """The embedded SmolLM2 served as if it were Llama Guard answers prose: a one-line error, no verdict made up."""
    project = copy_with(
        finished_project, tmp_path, f'\n[safety.guard]\nbackend = "openai"\nbase_url = "{llama_server}"\n'
    )
    before = runs(project)
    assert "not Llama Guard's 'safe' or 'unsafe'" in one_line_error(project, "safety")
    after = dict(runs(project))
    assert all(after[run_id] == state for run_id, state in before)
    assert "done" not in {
        state for run_id, state in after.items() if run_id.startswith("safety-") and (run_id, state) not in before
    }
