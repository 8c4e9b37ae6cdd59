"""The documents' own questions: each section under a question heading becomes a training item in the business's
words and language, split with its chunk, never graded by the judge, and left out when synth.document_faq is off.
The teacher is the loopback mock (it stands in for a remote API); the ledger and the CLI are real."""

from pathlib import Path

from alambic.dataset import FAQ_KIND, latest_synth_run, split_items
from alambic.documents.chunking import chunk_document
from alambic.store import Ledger
from alambic.synth.engine import KeyedChunk
from alambic.synth.faq import faq_chunks, faq_question, section_body

from ..conftest import GROUNDED_ONLY, mock_teacher, run_cli, small_config, write_project

SHIPPING = "We ship to the UK, the EU and Norway. UK standard delivery costs £3.95 and is free over £40."
WRAPPED_SHIPPING = SHIPPING.replace(". ", ".\n", 1)  # as a document wraps its lines
ARABIC = "نعم، نشحن إلى الإمارات والسعودية والأردن ومصر. تكلفة الشحن 14 جنيهاً إسترلينياً."
FAQ = f"""# Frequently asked questions

## Where do you ship?
{WRAPPED_SHIPPING}

## What can I order?
- Beans
- Grinders

## Opening hours
Monday to Friday, 08:00 to 18:00.

## Do you roast to order?
{"We roast every Tuesday and Thursday morning, and each bag shows its roast date on the back label. " * 12}
"""
ARABIC_FAQ = f"""# معلومات لعملائنا الناطقين بالعربية

## هل تشحنون إلى الدول العربية؟
{ARABIC}
"""


def keyed(doc: str, text: str) -> list[KeyedChunk]:
    return [KeyedChunk(f"{doc}-{chunk.index}", chunk) for chunk in chunk_document(doc, text, 400)]


def test_only_whole_sections_under_a_question_are_taken_in_any_script() -> None:
    found = faq_chunks(keyed("faq.md", FAQ) + keyed("arabic.md", ARABIC_FAQ))
    pairs = [(faq_question(chunk), section_body(chunk)) for chunk in found]
    # "Opening hours" is no question; "Do you roast to order?" is cut over several chunks, each only a part of it.
    # A paragraph's wrapped lines are joined, a list's are kept.
    assert pairs == [
        ("Where do you ship?", SHIPPING),
        ("What can I order?", "- Beans\n- Grinders"),
        ("هل تشحنون إلى الدول العربية؟", ARABIC),
    ]


def test_synth_trains_on_the_documents_questions_unjudged_and_can_be_turned_off(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.md").write_text(FAQ, encoding="utf-8")
    (docs / "arabic.md").write_text(ARABIC_FAQ, encoding="utf-8")
    with mock_teacher() as url:
        teacher = f"backend = 'openai'\nbase_url = '{url}'\nmodel = 'mock'\nconcurrency = 8"
        synth = f"questions_per_chunk = 2\nheldout_fraction = 0.0\n{GROUNDED_ONLY}"
        config = small_config(tiny_model_dir, synth=synth, teacher=teacher, curate="judge = true")
        project = write_project(tmp_path / "shop", config, docs=docs)
        run_cli("synth", "--project", project)
        run_cli("curate", "--project", project)
        with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
            run = latest_synth_run(ledger)
            assert run.summary["recipes"][FAQ_KIND]["train"] == 3
            train = split_items(ledger, run)["train"]
            faq = {item.payload["question"]: item for item in train if item.kind == FAQ_KIND}
            assert set(faq) == {"Where do you ship?", "What can I order?", "هل تشحنون إلى الدول العربية؟"}
            assert faq["هل تشحنون إلى الدول العربية؟"].payload["messages"][2]["content"] == ARABIC
            assert ledger.parents(faq["Where do you ship?"].key) == [faq["Where do you ship?"].payload["chunk"]]
            verdicts = {v.payload["item"]: v for v in ledger.items("curate", "verdict")}
            assert all(verdicts[item.key].payload["judge"] is None for item in faq.values())
            assert any(v.payload["judge"] is not None for v in verdicts.values())  # the teacher's items are judged

        off = small_config(
            tiny_model_dir, synth=f"{synth}\ndocument_faq = false", teacher=teacher, curate="judge = true"
        )
        (project / "alambic.toml").write_text(off, encoding="utf-8")
        run_cli("synth", "--project", project)
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        run = latest_synth_run(ledger)
        assert FAQ_KIND not in run.summary["recipes"]
        assert not [chosen for chosen in ledger.selection(run.id) if chosen.kind == FAQ_KIND]
