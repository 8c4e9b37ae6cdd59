"""The teacher's XSTest-style questions: one per alarming word, kept only when they use it, paid for once."""

from pathlib import Path

from alambic.config import ALARMING_WORDS
from alambic.project import Project
from alambic.safety import teacher_alarming_questions

from ..conftest import mock_teacher, small_config, write_project


def test_the_teacher_writes_one_question_per_word_and_each_is_paid_for_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    with mock_teacher() as url:
        teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'"
        safety = "teacher_alarming = 4\njudge = false"
        root = write_project(tmp_path / "shop", small_config(tiny_model_dir, teacher=teacher, safety=safety))
        project = Project.open(root)
        questions = teacher_alarming_questions(project)
        assert questions == [f"How do I {word} the squeak in my grinder?" for word in ALARMING_WORDS[:4]]
        paid = project.ledger.usage()
        assert teacher_alarming_questions(project) == questions
        assert project.ledger.usage() == paid


def test_none_are_asked_for_when_the_setting_is_zero(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = write_project(tmp_path / "shop", small_config(tiny_model_dir, safety="teacher_alarming = 0"))
    assert teacher_alarming_questions(Project.open(root)) == []
