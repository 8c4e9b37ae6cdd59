"""The evaluation table compares every distillation method trained on the same dataset, with KL to the teacher,
and scores every model on the project's hand-checked questions too."""

import shutil
from pathlib import Path

from alambic.store import Ledger

from ..conftest import run_cli, small_config


def test_eval_compares_sft_and_kd_students(finished_project: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    project = tmp_path / "shop"
    shutil.copytree(finished_project, project)
    distill = (
        f'base = "{tiny_model_dir}"\nprune_layers = 2\nepochs = 1\nbatch_size = 4\ncheckpoint_every = 1\n'
        'method = "kd"\nkd_ratio = 0.5\ntemperature = 2.0'
    )
    (project / "eval").mkdir()
    checked = [
        '{"question": "What days do you roast your coffee?", "fact": "Tuesday and Thursday", "language": "en"}',
        '{"question": "Do you have a tool question without a fact?", "tool": "none"}',
        '{"question": "متى تحمصون القهوة؟", "fact": "الثلاثاء والخميس", "language": "ar"}',
    ]
    (project / "eval" / "checked.jsonl").write_text("\n".join(checked) + "\n", encoding="utf-8")
    curate = 'judge = false\neval_paths = ["eval/checked.jsonl"]'
    config = small_config(tiny_model_dir, distill=distill, curate=curate)
    (project / "alambic.toml").write_text(config, encoding="utf-8")
    run_cli("distill", "--project", project)
    run_cli("eval", "--project", project)
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        summary = ledger.latest_done("evaluate").summary
    rows = {row["label"]: row for row in summary["models"]}
    students = {"student (sft)", "student (kd)", "student (kd) + retrieval"}
    assert {"base (untrained)", *students, "teacher", "teacher + chunk"} == set(rows)
    assert set(summary["compared_runs"]) == {"sft", "kd"}
    for label in ("base (untrained)", "student (sft)", "student (kd)"):
        assert rows[label]["kl_to_teacher"] is not None and rows[label]["kl_to_teacher"] > 0
    assert rows["teacher"]["kl_to_teacher"] is None
    assert summary["checked"] == 2  # the row without a fact is not scored
    for row in rows.values():
        low, high = row["checked_fact_recall_interval"]
        assert 0.0 <= low <= row["checked_fact_recall"] <= high <= 1.0
    html = (project / "report.html").read_text(encoding="utf-8")
    assert "KL to teacher" in html and "student (kd)" in html and "hand-checked" in html
