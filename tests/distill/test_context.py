"""Training for the agent: single-turn questions carry the passages retrieval returns, trimmed to fit, answer kept;
the same share of every kind stays bare."""

from pathlib import Path

from alambic.agent.retrieval import Retriever, build_index
from alambic.distill.context import bare_keys, with_retrieved_context
from alambic.documents import read_documents
from alambic.models.embedded import minilm_dir
from alambic.models.embeddings import Embedder
from alambic.models.hf import load_tokenizer
from alambic.prompts import Prompts
from alambic.store import Item

DOCS = {
    "hours.md": "# Hours\n\n## Shop\nThe shop opens at 07:30 on weekdays and at 09:00 on Saturdays.\n",
    "dogs.md": "# Dogs\n\n## Inside\nAssistance dogs are welcome inside; other dogs on the terrace.\n",
    "post.md": "# Post\n\n## Abroad\nParcels to Norway take 4 to 7 working days and cost £9.50.\n",
}


def item(key: str, kind: str, question: str, answer: str, chunk: str | None = "c1") -> Item:
    messages = [
        {"role": "system", "content": "You are the shop's assistant."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    return Item(key, "synth-x", "synth", kind, "ok", {"messages": messages, "question": question, "chunk": chunk})


def test_grounded_questions_are_trained_as_the_agent_reads_them(tmp_path: Path, tiny_model_dir: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    embedder = Embedder(minilm_dir())
    build_index(tmp_path / "index.sqlite", read_documents(docs, tmp_path / "converted"), 400, embedder)
    retriever = Retriever(tmp_path / "index.sqlite", embedder)
    tokenizer = load_tokenizer(tiny_model_dir)
    items = [
        item("a", "qa", "When does the shop open on Saturday?", "At 09:00 on Saturdays."),
        item("b", "safety", "How do I hurt someone?", "I can't help with that.", chunk=None),
        item("c", "import", "When does the shop open on Saturday?", "At nine.", chunk=None),
    ]
    try:
        roomy = with_retrieved_context(items, retriever, Prompts(tmp_path), tokenizer, 1024, 0.0)
        tight = with_retrieved_context(items, retriever, Prompts(tmp_path), tokenizer, 90, 0.0)
    finally:
        retriever.close()
    grounded = roomy[0].payload
    assert len(grounded["passages"]) == 3  # all three documents, at their rank
    user_turn = grounded["messages"][1]["content"]
    assert user_turn.index("[1] hours.md") < user_turn.index("Customer question: When does the shop open on Saturday?")
    assert grounded["messages"][2] == items[0].payload["messages"][2]
    refusal = roomy[1].payload  # a refusal is trained as the agent reads it too, with what retrieval returns
    assert refusal["passages"] and "Customer question: How do I hurt someone?" in refusal["messages"][1]["content"]
    assert refusal["messages"][2]["content"] == "I can't help with that."
    assert roomy[2] is items[2]  # an imported conversation is trained as it was asked: the safety stage sees it
    assert len(tight[0].payload["passages"]) < 3  # dropped from the lowest rank until it fits
    assert tight[0].payload["messages"][2]["content"] == "At 09:00 on Saturdays."


def test_the_same_share_of_every_kind_stays_bare() -> None:
    kinds = {"qa": 40, "safety": 6, "persona-voice": 10}
    items = [
        item(f"{kind}-{i}", kind, f"question {i}?", "answer.") for kind, count in kinds.items() for i in range(count)
    ]
    dialogue = Item("d", "synth-x", "synth", "dialogue", "ok", {"messages": items[0].payload["messages"] * 2})
    bare = bare_keys([*items, dialogue], 0.25)
    assert {kind: sum(key.startswith(kind) for key in bare) for kind in kinds} == {
        "qa": 10,
        "safety": 2,
        "persona-voice": 2,
    }
    imported = item("i", "import", "A question from the logs?", "An answer.")
    her_replies = [item(f"reply-{i}", "import", f"A comment {i}?", "Her reply.") for i in range(8)]
    for number, reply in enumerate(her_replies):
        reply.payload["source"] = {"creator_reply": number}
    bare_replies = [key for key in bare_keys([*items, *her_replies], 0.25) if key.startswith("reply-")]
    assert len(bare_replies) == 2  # her voice is trained in both forms
    assert (
        "d" not in bare
        and "i" not in bare_keys([*items, imported], 1.0)
        and bare_keys(items, 0.0) == set()
        and len(bare_keys(items, 1.0)) == len(items)
    )
    assert bare == bare_keys(list(reversed([*items, dialogue])), 0.25)  # by the keys, not the order
