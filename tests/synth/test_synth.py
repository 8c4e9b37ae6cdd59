"""synth on the real embedded teacher: in-process through llama.cpp, and over HTTP to llama.cpp's server."""

import shutil
from pathlib import Path

import pytest

from alambic.dataset import latest_synth_run, split_items
from alambic.store import Ledger

from ..conftest import EXAMPLE, GROUNDED_ONLY, run_cli, small_config, write_project

pytestmark = pytest.mark.integration
GREEDY = (
    "max_chunks = 4\nquestions_per_chunk = 2\nmax_answer_tokens = 64\ntemperature = 0.0\nheldout_fraction = 0.25\n"
    + GROUNDED_ONLY
)


def qa_rows(project: Path) -> list[tuple]:
    with Ledger(project / ".alambic" / "ledger.sqlite") as ledger:
        return sorted(
            (i.payload["question"], i.payload["answer"], i.status, i.reason) for i in ledger.items("synth", "qa")
        )


def test_synth_records_items_splits_by_chunk_and_skips_when_done(small_project: Path) -> None:
    shutil.copy(EXAMPLE / "docs" / "warranty-terms.pdf", small_project / "docs")  # recorded, though past max_chunks
    run_cli("synth", "--project", small_project)
    ledger = Ledger(small_project / ".alambic" / "ledger.sqlite")
    run = latest_synth_run(ledger)
    splits = split_items(ledger, run)
    assert splits["train"] and splits["heldout"]
    train_chunks = {i.payload["chunk"] for i in splits["train"]}
    heldout_chunks = {i.payload["chunk"] for i in splits["heldout"]}
    assert not train_chunks & heldout_chunks
    assert run.summary["train_items"] == len(splits["train"])
    for item in ledger.items("synth", "qa", "rejected"):
        assert item.reason in run.summary["rejected"]
    arabic = [i for i in ledger.items("synth", "chunk") if i.payload["doc"] == "arabic-customers.md"]
    source = (small_project / "docs" / "arabic-customers.md").read_text(encoding="utf-8")
    assert arabic and all(i.payload["text"].split("\n\n", 1)[1] in source for i in arabic)
    documents = {i.payload["path"]: i.payload for i in ledger.items("synth", "document")}
    assert documents["warranty-terms.pdf"]["converter"].startswith("pdfminer.six ")
    assert documents["warranty-terms.pdf"]["pages"] == 3 and documents["faq.md"]["converter"] == "text"
    chunk_citations = {i.key: i.payload["citation"] for i in ledger.items("synth", "chunk")}
    assert any(citation.startswith("warranty-terms.pdf, page ") for citation in chunk_citations.values())
    for item in splits["train"] + splits["heldout"]:
        assert item.payload["citation"] == chunk_citations[item.payload["chunk"]]
    before = sorted(i.key for i in ledger.items())
    ledger.close()

    again = run_cli("synth", "--project", small_project)
    assert "already done" in again.stderr
    with Ledger(small_project / ".alambic" / "ledger.sqlite") as ledger:
        assert sorted(i.key for i in ledger.items()) == before


def test_openai_backend_against_a_real_server_matches_in_process(
    tmp_path: Path, tiny_model_dir: Path, llama_server: str
) -> None:
    local = write_project(tmp_path / "local", small_config(tiny_model_dir, synth=GREEDY))
    # llama.cpp's server applies repeat_penalty 1.1 unless told otherwise; in-process llama.cpp uses 1.0.
    teacher = (
        f'backend = "openai"\nbase_url = "{llama_server}"\nmodel = "SmolLM2-135M-Instruct"\nconcurrency = 2\n'
        "extra_body = { repeat_penalty = 1.0 }"
    )
    remote = write_project(tmp_path / "remote", small_config(tiny_model_dir, synth=GREEDY, teacher=teacher))
    run_cli("synth", "--project", local)
    run_cli("synth", "--project", remote)
    local_rows, remote_rows = qa_rows(local), qa_rows(remote)
    assert len(local_rows) >= 4
    assert remote_rows == local_rows
