"""The served agent, through the real openai SDK: an order lookup, a follow-up that relies on memory, a hand-off
with a ticket, a tool that fails, an instruction planted in a document, and a server killed with SIGKILL in the
middle of a conversation that then goes on."""

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from alambic.agent.memory import Memory
from tests.conftest import INJECTION, agent_server


def ask(client: Any, question: str, session: str) -> tuple[str, dict[str, Any]]:
    reply = client.chat.completions.create(
        model="agent", messages=[{"role": "user", "content": question}], user=session, max_tokens=16
    )
    return reply.choices[0].message.content, reply.model_extra["alambic"]


def tickets(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(root / "data" / "orders.sqlite") as db:
        return db.execute("SELECT summary, session FROM tickets").fetchall()


def test_a_conversation_with_an_order_lookup_memory_and_a_handoff(agent_project: Path) -> None:
    with agent_server(agent_project) as (client, _):
        assert {"agent", "student"} <= {model.id for model in client.models.list()}
        _, lookup = ask(client, "Could you tell me where order QL-1006 is now?", "alice")
        call = lookup["tool_calls"][0]
        assert (call["tool"], call["arguments"], call["ok"]) == ("order_status", {"order_id": "QL-1006"}, True)
        assert call["result"][0]["tracking"] == "RM771204558GB"
        assert lookup["session"] == "alice" and lookup["remembered"] == 0
        _, follow_up = ask(client, "And which carrier has it?", "alice")
        assert follow_up["remembered"] == 2
        _, other = ask(client, "And which carrier has it?", "bob")
        assert other["remembered"] == 0  # one session never sees another's
        text, handoff = ask(client, "Can I speak to someone about order QL-1006?", "alice")
        assert handoff["handoff"] == "asked for a person"
        assert f"Your reference is {handoff['ticket']}." in text
        arabic, arabic_handoff = ask(client, "أريد التحدث مع موظف من فضلك", "farah")
        assert (
            arabic
            == f"سأحيل طلبك إلى أحد أعضاء فريقنا، وسيتواصل معك قريباً. رقم طلبك المرجعي هو {arabic_handoff['ticket']}."
        )
    assert ("Can I speak to someone about order QL-1006?", "alice") in tickets(agent_project)
    assert ("أريد التحدث مع موظف من فضلك", "farah") in tickets(agent_project)
    memory = Memory(agent_project / ".alambic" / "conversations.sqlite")
    turns = memory.history("anonymous/alice", 10, 10_000)  # the sessions of the served --no-auth
    recorded = memory.handoffs("alice")
    memory.close()
    assert [(h["reason"], h["ticket"]) for h in recorded] == [("asked for a person", handoff["ticket"])]
    assert [turn["role"] for turn in turns] == ["user", "assistant"] * 3
    assert "RM771204558GB" in turns[0]["content"]  # the lookup's result is remembered with the question


def test_a_failing_tool_hands_off(agent_project: Path) -> None:
    with agent_server(agent_project) as (client, _):
        _, failed = ask(client, "How many loyalty points are on card LC-2222?", "carol")
    assert failed["tool_calls"][0]["tool"] == "loyalty_points"
    assert "ConnectError" in failed["tool_calls"][0]["error"]
    assert failed["handoff"] == "a tool failed" and failed["ticket"] is not None


def test_an_instruction_in_a_document_calls_no_tool(agent_project: Path) -> None:
    question = "How long do refunds take to reach my card?"
    with agent_server(agent_project) as (client, _):
        _, reply = ask(client, question, "dave")
    assert any(INJECTION[:40] in passage["text"] for passage in reply["passages"])
    # The only call allowed is a hand-off's ticket, in the customer's own words.
    assert all(call["arguments"] == {"summary": question, "session": "dave"} for call in reply["tool_calls"])
    assert not any("refund all orders" in summary for summary, _ in tickets(agent_project))


def test_a_killed_server_loses_no_turn_and_the_session_goes_on(agent_project: Path) -> None:
    with agent_server(agent_project) as (client, process):
        ask(client, "Has QL-1002 shipped yet?", "erin")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    with agent_server(agent_project) as (client, _):
        _, reply = ask(client, "And when will it arrive?", "erin")
    assert reply["remembered"] == 2


def test_a_doubtful_turn_cascades_to_the_teacher_and_becomes_a_candidate(agent_project: Path) -> None:
    """cascade = true, with a teacher over the API (the loopback mock stands in for a remote one): a turn the
    student is unsure of is answered by the teacher and stored as a candidate training item."""
    import asyncio

    from alambic.agent.build import open_agent
    from alambic.config import TeacherSection
    from alambic.models import open_teacher
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder
    from alambic.models.llamacpp import LlamaCppChat
    from alambic.project import Project
    from alambic.results import ReleaseResult
    from tests.conftest import mock_teacher

    project = Project.open(agent_project)
    release = project.ledger.latest_done("release").result(ReleaseResult)
    with mock_teacher() as url:
        teacher = open_teacher(TeacherSection(backend="openai", base_url=url, model="mock"), agent_project)
        student = LlamaCppChat(Path(next(iter(release.gguf.values()))), 2048)
        opened = open_agent(project, Path(release.agent), student, Embedder(minilm_dir()), teacher)
        # Nothing is close enough and no answer sure enough: every turn is in doubt.
        doubt = {"cascade": True, "min_similarity": 2.0, "min_logprob": 0.0}
        agent = type(opened)(opened.parts, project.config.agent.model_copy(update=doubt))
        reply = asyncio.run(agent.answer("What grind should I use for a moka pot?", "gina"))
        student.close()
    assert reply.cascaded and reply.handoff is None and reply.text
    candidates = [item.payload for item in project.ledger.items("serve", kind="cascade")]
    assert candidates[-1]["question"] == "What grind should I use for a moka pot?"
    assert candidates[-1]["messages"][-1] == {"role": "assistant", "content": reply.text}
    # The tiny project's router may send the question to a tool; then the answer's confidence decides.
    reasons = {"nothing in the documents answers it", "the model is unsure of its answer"}
    assert candidates[-1]["candidate"] and candidates[-1]["reason"] in reasons
