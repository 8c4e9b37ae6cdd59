"""The voice score: a classifier that tells the creator's replies from generic ones, and eval scoring every
model's replies on the posts nobody trained on."""

import json
import shutil
from pathlib import Path

import pytest

from alambic.errors import AlambicError
from alambic.evaluate.voice import VoiceClassifier
from alambic.persona import read_replies
from alambic.store import Ledger

from ..conftest import run_cli, small_config

REPLIES = Path(__file__).parents[2] / "src/alambic/examples/creator/voice/replies.jsonl"
GENERIC = (
    "Thank you for your comment! We appreciate your feedback and hope you enjoy the recipe.",
    "Thanks for reaching out. That is a great question, and we will consider it for a future post.",
    "We're glad you liked the post! Please let us know if you have any other questions.",
    "Thank you for sharing your experience. We value every member of our community.",
    "Great question! The recipe can be adapted to your needs. Feel free to experiment.",
    "We understand your concern and appreciate you taking the time to comment.",
)


def generic_reply(comment: str, index: int) -> str:
    return f'{GENERIC[index % len(GENERIC)]} Regarding your comment, "{comment[:40]}", we will look into it.'


def test_the_classifier_tells_the_creators_replies_from_generic_ones_on_held_out_posts() -> None:
    replies = read_replies(REPLIES)
    trained = [r for r in replies if not r.heldout]
    heldout = [r for r in replies if r.heldout]
    classifier = VoiceClassifier(
        [r.reply for r in trained], [generic_reply(r.comment, i) for i, r in enumerate(trained)]
    )
    generic = [generic_reply(r.comment, i + 3) for i, r in enumerate(heldout)]
    assert classifier.accuracy([r.reply for r in heldout], generic) >= 0.9
    creator, other = classifier.scores([r.reply for r in heldout]), classifier.scores(generic)
    assert sum(creator) / len(creator) > 0.5 > sum(other) / len(other)
    assert classifier.scores([""]) == [0.0]


def test_a_bad_replies_file_is_one_error_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "replies.jsonl"
    path.write_text('{"post": "p", "comment": "c", "reply": "r", "heldout": true}\n{"post": "p"}\n', encoding="utf-8")
    with pytest.raises(AlambicError, match=r"replies.jsonl:2: expected post, comment, reply and heldout"):
        read_replies(path)
    path.write_text('{"post": "p", "comment": "c", "reply": "r", "heldout": true}\n', encoding="utf-8")
    with pytest.raises(AlambicError, match="needs replies on held-out posts and on the others"):
        read_replies(path)
    with pytest.raises(AlambicError, match=r"synth\.persona\.replies_file: cannot read"):
        read_replies(tmp_path / "missing.jsonl")


def test_eval_scores_every_models_voice(finished_project: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    project = tmp_path / "creator"
    shutil.copytree(finished_project, project)
    (project / "voice").mkdir()
    rows = [json.loads(line) for line in REPLIES.read_text(encoding="utf-8").splitlines()]
    subset = [r for r in rows if not r["heldout"]][:12] + [r for r in rows if r["heldout"]][:4]
    (project / "voice" / "replies.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in subset), encoding="utf-8"
    )
    persona = 'creator = "Layla Haddad"\nreplies_file = "voice/replies.jsonl"'
    (project / "alambic.toml").write_text(small_config(tiny_model_dir, **{"synth.persona": persona}), encoding="utf-8")
    run_cli("eval", "--project", project)
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        summary = ledger.latest_done("evaluate").summary
        answers = [i for i in ledger.items("evaluate", "answer") if i.run_id == ledger.latest_done("evaluate").id]
    voice = summary["voice"]
    assert voice["replies"] == 4 and voice["trained_on"] == 12 and 0.0 <= voice["accuracy"] <= 1.0
    assert voice["creator"] > voice["generic"]  # the scale's ends: her held-out replies above the teacher's generic
    for row in summary["models"]:
        assert 0.0 <= row["voice"] <= 1.0
    assert len(answers) == len(summary["models"]) * (summary["questions"] + summary["checked"] + 4)
    html = (project / "report.html").read_text(encoding="utf-8")
    assert "<th>voice</th>" in html and "sound like the creator" in html
    bad = 'creator = "Layla Haddad"\nreplies_file = "voice/none.jsonl"'
    (project / "alambic.toml").write_text(small_config(tiny_model_dir, **{"synth.persona": bad}), encoding="utf-8")
    failed = run_cli("eval", "--project", project, check=False)
    assert failed.returncode != 0 and "synth.persona.replies_file: cannot read" in failed.stderr + failed.stdout
