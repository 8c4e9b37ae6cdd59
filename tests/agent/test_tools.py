"""The business's tools: arguments checked against their schema, values with a pattern taken from the customer's
words only, and every failure (malformed arguments, a failing query, a timeout, an endpoint down) a failed
result rather than an exception."""

import http.server
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alambic.agent.router import ToolRouter, asks_for_person, person_phrases
from alambic.agent.tools import Toolbox
from alambic.config import ToolSection, load_config
from alambic.models.embedded import minilm_dir
from alambic.models.embeddings import Embedder
from tests.conftest import EXAMPLE, free_port


@pytest.fixture
def toolbox(tmp_path: Path) -> Toolbox:
    database = tmp_path / "orders.sqlite"
    shutil.copyfile(EXAMPLE / "data" / "orders.sqlite", database)
    return Toolbox(load_config(EXAMPLE / "alambic.toml").agent.tools, database)


def tickets(toolbox: Toolbox) -> list[tuple]:
    assert toolbox.database is not None
    with sqlite3.connect(toolbox.database) as db:
        return db.execute("SELECT summary, session FROM tickets").fetchall()


def test_an_order_is_looked_up_by_the_number_the_customer_wrote(toolbox: Toolbox) -> None:
    grounded = toolbox.grounded_values("order_status", "hi, where is ql-1002? (not QL-9)")
    assert grounded == {"order_id": ["QL-1002"]}  # spelt as the schema's pattern wants it
    schema = toolbox.arguments_schema("order_status", grounded)
    assert schema["properties"]["order_id"] == {"type": "string", "enum": ["QL-1002"]}
    result = toolbox.call("order_status", {"order_id": "QL-1002"})
    assert result.ok and result.result[0]["carrier"] == "DPD" and result.result[0]["status"] == "shipped"
    assert toolbox.grounded_values("order_status", "where is my order?") is None


def test_agent_filled_arguments_are_not_the_models(toolbox: Toolbox) -> None:
    schema = toolbox.arguments_schema("create_ticket", {})
    assert schema["properties"] == {}  # summary and session are the customer's words and the session id


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ('{"order_id": "QL-1002"', "not a JSON object"),  # what a model cut short would write
        (["QL-1002"], "not a JSON object"),
        ({"order_id": 1002}, "invalid arguments"),
        ({"order_id": "QL-1002; DROP TABLE orders"}, "invalid arguments"),
        ({}, "invalid arguments"),
    ],
)
def test_malformed_arguments_fail_cleanly(toolbox: Toolbox, arguments: object, error: str) -> None:
    result = toolbox.call("order_status", arguments)
    assert not result.ok and error in (result.error or "")
    assert toolbox.call("order_status", {"order_id": "QL-1001"}).ok  # the table is still there


def test_unknown_tool_and_dry_run(toolbox: Toolbox) -> None:
    assert toolbox.call("refund_everything", {}).error == "unknown tool 'refund_everything'"
    assert toolbox.call("create_ticket", {"summary": "broken grinder"}, commit=False).ok
    assert tickets(toolbox) == []
    assert toolbox.call("create_ticket", {"summary": "broken grinder", "session": "s1"}).result["id"] == 1
    assert tickets(toolbox) == [("broken grinder", "s1")]


def test_a_reply_template_tells_what_the_tool_returned_in_the_customers_language(toolbox: Toolbox) -> None:
    shipped = toolbox.call("order_status", {"order_id": "QL-1006"})
    english = toolbox.reply(shipped, "en")
    assert english == (
        "Order QL-1006 is shipped: it is with Royal Mail, tracking number RM771204558GB. Last updated 2026-11-27."
    )
    assert toolbox.reply(shipped, None) == toolbox.reply(shipped, "fr") == english  # no French one: the default
    arabic = toolbox.reply(shipped, "ar")
    assert arabic is not None and arabic.startswith("الطلب QL-1006: تم شحنه") and "RM771204558GB" in arabic
    processing = toolbox.reply(toolbox.call("order_status", {"order_id": "QL-1003"}), "en")
    assert processing == "Order QL-1003 is processing. Last updated 2026-11-28."  # no carrier yet, none said
    ticket = toolbox.call("create_ticket", {"summary": "broken grinder"})
    reference = ticket.result["id"]
    assert toolbox.reply(ticket, "ar") == f"سجّلت ذلك لفريقنا، وسيتواصل معك قريباً. رقم طلبك المرجعي هو {reference}."


@pytest.mark.parametrize(
    "reply",
    [
        "Order {{ row.order_id }} left on {{ row.shipped_on }}.",  # a field the result lacks
        "{{ row.__class__.__mro__ }}",  # the sandbox: a template reads the result's values, nothing else
        "{% if false %}x{% endif %}",  # says nothing
    ],
)
def test_a_reply_the_result_cannot_fill_is_not_given(tmp_path: Path, reply: str) -> None:
    database = tmp_path / "orders.sqlite"
    shutil.copyfile(EXAMPLE / "data" / "orders.sqlite", database)
    tool = load_config(EXAMPLE / "alambic.toml").agent.tools[0].model_copy(update={"reply": reply, "replies": {}})
    toolbox = Toolbox([tool], database)
    assert toolbox.reply(toolbox.call("order_status", {"order_id": "QL-1006"}), "en") is None
    assert toolbox.reply(toolbox.call("order_status", {"order_id": "QL-1"}), "en") is None  # failed: invalid id


def test_a_slow_query_times_out(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    sqlite3.connect(database).close()
    slow = ToolSection(
        name="slow",
        description="counts for ever",
        sql="WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
        timeout_s=0.3,
    )
    began = time.monotonic()
    result = Toolbox([slow], database).call("slow", {})
    assert not result.ok and result.error == "timed out after 0.3 s"
    assert time.monotonic() - began < 5


@pytest.fixture
def slow_endpoint() -> Iterator[str]:
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            time.sleep(2)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stock"
    server.shutdown()


def test_an_endpoint_that_hangs_or_is_down_fails_cleanly(slow_endpoint: str) -> None:
    hanging = ToolSection(name="stock", description="stock level", url=slow_endpoint, timeout_s=0.3)
    down = ToolSection(name="down", description="stock level", url=f"http://127.0.0.1:{free_port()}/x")
    tools = Toolbox([hanging, down], None)
    assert tools.call("stock", {}).error == "timed out after 0.3 s"
    assert "ConnectError" in (tools.call("down", {}).error or "")


def test_the_router_picks_tools_in_english_and_arabic() -> None:
    tools = load_config(EXAMPLE / "alambic.toml").agent.tools
    ordinary = [
        "What days do you roast?",
        "Do you ship to Norway?",
        "How much is the V60 kit?",
        "Can I return an opened bag?",
        "هل تشحنون إلى مصر؟",
        "ما هي ساعات العمل؟",
    ]
    router = ToolRouter.train({t.name: t.examples for t in tools}, ordinary, Embedder(minilm_dir()))
    every = {"order_status", "create_ticket"}
    assert router.choose("Could you tell me where order QL-1006 is now?", every) == "order_status"
    assert router.choose("متى يصل الطلب رقم QL-1004؟", every) == "order_status"
    assert router.choose("The kettle I received leaks, please log a complaint", every) == "create_ticket"
    assert router.choose("Do you ship to Ireland?", every) == "none"
    assert router.choose("Could you tell me where order QL-1006 is now?", {"create_ticket"}) != "order_status"


def test_asking_for_a_person() -> None:
    phrases = person_phrases()
    assert asks_for_person("Can I TALK to a real person please?", phrases)
    assert asks_for_person("أريد التحدث مع موظف من فضلك", phrases)
    assert not asks_for_person("Is your staff trained as baristas?", phrases)


def test_questions_in_a_language_the_training_questions_lack_open_no_ticket(tmp_path: Path) -> None:
    """With a weak teacher every training question may be English; the documents' own passages, in every language
    they are written in, teach the router that what is about the business's content calls for no tool."""
    from alambic.agent.retrieval import Retriever, build_index
    from alambic.documents import read_documents

    embedder = Embedder(minilm_dir())
    build_index(tmp_path / "index.sqlite", read_documents(EXAMPLE / "docs", tmp_path / "converted"), 400, embedder)
    retriever = Retriever(tmp_path / "index.sqlite", embedder)
    passages = retriever.texts()
    retriever.close()
    tools = load_config(EXAMPLE / "alambic.toml").agent.tools
    requests = {t.name: t.examples for t in tools}
    english = ["What days do you roast?", "Do you ship to Norway?", "How much is the V60 kit?", "Is there parking?"]
    arabic = ["هل لديكم قهوة من إثيوبيا؟", "ما هي أوقات الدوام يوم الجمعة؟", "كم يستغرق التوصيل إلى الكويت؟"]
    every = {"order_status", "create_ticket"}
    alone = ToolRouter.train(requests, english, embedder)
    with_documents = ToolRouter.train(requests, english + passages, embedder)
    assert any(alone.choose(question, every) == "create_ticket" for question in arabic)
    assert [with_documents.choose(question, every) for question in arabic] == ["none"] * len(arabic)
    assert with_documents.choose("متى يصل الطلب رقم QL-1004؟", every) == "order_status"
    assert with_documents.choose("The kettle I received leaks, please log a complaint", every) == "create_ticket"
