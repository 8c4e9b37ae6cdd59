"""The checks an answer must pass: its numbers come from what the agent read, it is in the customer's language,
it takes up the question, and what it adds the passages say."""

from pathlib import Path

from alambic.agent.grounding import support, unsupported_figures, uses_results
from alambic.agent.loop import Agent, AgentCalibration, AgentReply

LOOKUP = "Could you tell me where order QL-1006 is now?"
TRACKING = "RM771204558GB"  # QL-1006's, in the example's orders.sqlite
PASSAGE = "UK standard delivery costs £3.95 and is free over £40. The shop opens 09:00 to 17:00; call 0131 555 0142."


def test_a_made_up_price_is_caught_and_the_documents_figures_pass() -> None:
    assert unsupported_figures("Delivery is £4.95, free over £40.", [PASSAGE]) == ["4.95"]
    assert unsupported_figures("It costs £3.95, and it is free over £40.00.", [PASSAGE]) == []
    assert unsupported_figures("We open at 9 and close at 17:00.", [PASSAGE]) == []
    assert unsupported_figures("We close at 17:30.", [PASSAGE]) == ["17:30"]
    assert unsupported_figures("Call 0131 555 0143.", [PASSAGE]) == ["143"]


def test_the_same_value_written_another_way_is_the_same_figure() -> None:
    assert unsupported_figures("A bag is £12.5, the box 1,200 g.", ["A bag costs £12.50; the box weighs 1200 g."]) == []
    assert unsupported_figures("It costs £12.05.", ["It costs £12.50."]) == ["12.05"]


def test_figures_from_any_source_count_and_each_is_named_once() -> None:
    tool_result = 'order_status({"order_id": "QL-1006"}): [{"tracking": "RM771204558GB"}]'
    answer = "Order QL-1006 is with tracking RM771204558GB; it left 12 days ago, 12 days!"
    assert unsupported_figures(answer, [PASSAGE, tool_result]) == ["12"]
    assert unsupported_figures("No figures here.", []) == []


def test_arabic_indic_digits_match_their_latin_twins() -> None:
    arabic = "الشحن إلى مصر بسعر 14 جنيهاً إسترلينياً"
    assert unsupported_figures("التكلفة ١٤ جنيهاً", [arabic]) == []
    assert unsupported_figures("التكلفة ١٦ جنيهاً", [arabic]) == ["16"]


def test_the_release_counts_the_calibration_answers_that_make_up_figures(agent_project: Path) -> None:
    from alambic.project import Project
    from alambic.results import ReleaseResult

    project = Project.open(agent_project)
    release = project.ledger.latest_done("release").result(ReleaseResult)
    project.close()
    calibration = AgentCalibration.model_validate_json((Path(release.agent) / "calibration.json").read_text("utf-8"))
    assert calibration.made_up_figures is not None
    assert 0 <= calibration.made_up_figures <= calibration.calibrated_on


def test_an_answer_that_takes_up_the_question_is_closer_to_it_than_a_non_answer() -> None:
    from alambic.agent.grounding import relevance
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder

    question = "When does the shop open on Saturday?"
    answers = ["The shop opens at 09:00 on Saturdays.", "Please share the customer's question.", "I'm glad to help!"]
    answer, *non_answers = relevance(Embedder(minilm_dir()), [question] * 3, answers)
    assert all(answer > other + 0.2 for other in non_answers)


def test_an_answer_in_another_language_off_the_question_or_ignoring_the_tool_is_handed_off(
    agent_project: Path,
) -> None:
    """The agent's model over the API (the loopback mock stands in for a remote one), which answers every question
    with English lines about something else, which no passage says."""
    import asyncio
    import dataclasses

    from alambic.agent.build import open_agent
    from alambic.agent.router import ToolRouter
    from alambic.agent.tools import Toolbox, ToolResult
    from alambic.config import TeacherSection
    from alambic.models import open_teacher
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder
    from alambic.project import Project
    from alambic.results import ReleaseResult
    from tests.conftest import mock_teacher

    project = Project.open(agent_project)
    release = project.ledger.latest_done("release").result(ReleaseResult)
    calibration = AgentCalibration.model_validate_json((Path(release.agent) / "calibration.json").read_text("utf-8"))
    asked = {"min_similarity": -1.0, "min_logprob": -1e9, "min_support": 0.0, "handoff_tool": None}

    def agent(with_tools: bool = False, replies: bool = True, **settings: object) -> Agent:
        configured = project.config.agent.model_copy(update={**asked, **settings})
        return Agent((opened.parts if replies else unreplied) if with_tools else parts, configured)

    async def reply(question: str, with_tools: bool = False, replies: bool = True, **settings: object) -> AgentReply:
        return await agent(with_tools, replies, **settings).answer(question)

    async def replies() -> list[AgentReply]:
        arabic, english = "متى يفتح المتجر يوم السبت؟", "When does the shop open on Saturday?"
        return [
            await reply(arabic, min_relevance=-1.0),
            await reply(english, min_relevance=1.01),
            await reply(english, min_relevance=-1.0),
            await reply(arabic, min_relevance=-1.0, check_language=False),
            await reply(LOOKUP, with_tools=True, min_relevance=1.01, check_tool_use=True),
            await reply(LOOKUP, with_tools=True, min_relevance=1.01, check_tool_use=False),
            await reply(english, min_relevance=-1.0, min_support=0.5),
            await reply(LOOKUP, with_tools=True, min_relevance=-1.0, min_support=1.01, check_tool_use=False),
            await reply(LOOKUP, with_tools=True, replies=False, min_relevance=1.01, check_tool_use=True),
        ]

    with mock_teacher() as url:
        model = open_teacher(TeacherSection(backend="openai", base_url=url, model="mock"), agent_project)
        embedder = Embedder(minilm_dir())
        opened = open_agent(project, Path(release.agent), model, embedder)
        # A business without tools: the tiny project's router may send any question to one.
        parts = dataclasses.replace(opened.parts, toolbox=Toolbox([], None), router=ToolRouter.train({}, [], embedder))
        toolbox = opened.parts.toolbox
        silent = [tool.model_copy(update={"reply": None, "replies": {}}) for tool in toolbox.tools.values()]
        unreplied = dataclasses.replace(opened.parts, toolbox=Toolbox(silent, toolbox.database))
        arabic, off, taken, unchecked, told, trusted, elsewhere, looked_up, ignored = asyncio.run(replies())
        opened_earlier = ToolResult("create_ticket", {"summary": "Stale beans"}, True, {"changed": 1, "id": 41})
        handed = agent(handoff_tool="create_ticket")._handoff(
            AgentReply("", "erin", tool_calls=[opened_earlier]), "Stale beans", "a test"
        )
    project.close()
    assert ignored.handoff == "the answer tells nothing the tool returned"
    assert ignored.tool_calls[0].tool == "order_status" and ignored.tool_calls[0].ok
    # With the tool's reply template, the lookup's result is told in the template's words instead of a hand-off.
    assert told.handoff is None and told.replaced == "the answer tells nothing the tool returned"
    assert told.text.startswith(f"Order QL-1006 is shipped: it is with Royal Mail, tracking number {TRACKING}.")
    assert trusted.handoff is None  # a tool informed it: neither the tool check (off) nor relevance applies
    assert handed.ticket == "41" and handed.tool_calls == [opened_earlier]  # the turn's own ticket, not a second
    assert arabic.handoff == "the answer is not in the customer's language"
    assert arabic.text.startswith("سأحيل طلبك إلى أحد أعضاء فريقنا")
    assert off.handoff == "the answer does not take up the question"
    assert taken.handoff is None and unchecked.handoff is None and taken.text.startswith("Is ")
    assert elsewhere.handoff == "the documents do not say what the answer adds"
    assert looked_up.handoff is None  # a tool informed it: the passages need not say it
    assert calibration.off_language is not None and 0 <= calibration.off_language <= calibration.calibrated_on


def test_an_answer_tells_what_the_tool_returned_that_the_customer_did_not_write() -> None:
    row = {"order_id": "QL-1006", "status": "in_transit", "tracking": "RM771204558GB", "updated": "2026-11-10"}
    assert uses_results("QL-1006 is in transit; tracking RM771204558GB.", LOOKUP, [row])
    assert uses_results("It was last updated on 2026-11-10.", LOOKUP, [row])
    assert not uses_results("Your order QL-1006: I'm glad to help!", LOOKUP, [row])  # only what the customer wrote
    assert uses_results("Your reference is 41.", "Open a complaint", [{"changed": 1, "id": 41}])
    assert not uses_results("Sorry, that's not something I can help with.", "Open a complaint", [{"id": 41}])
    assert uses_results("I found no such order.", "Where is QL-9999?", [[]])  # nothing was returned to tell


def test_what_an_answer_adds_to_the_question_is_weighed_against_the_passages(tmp_path: Path) -> None:
    from alambic.agent.retrieval import Retriever, build_index
    from alambic.documents import read_documents
    from alambic.models.embedded import minilm_dir
    from alambic.models.embeddings import Embedder
    from tests.agent.test_retrieval import DOCS, write_docs

    embedder = Embedder(minilm_dir())
    index = tmp_path / "index.sqlite"
    build_index(index, read_documents(write_docs(tmp_path / "docs", DOCS), tmp_path / "converted"), 300, embedder)
    retriever = Retriever(index, embedder)

    def supported(answer: str, question: str) -> float:
        return support(answer, question, [p.text for p in retriever.search(question, 2)], retriever.rarity)

    try:
        english, arabic = "When does the espresso bar open?", "كم سعر الدلة النحاسية؟"
        taken = supported("It opens at 07:30 on weekdays, and closes at 17:00.", english)
        greeting = supported("I'm glad you reached out! How can I help you today?", english)
        elsewhere = supported("Our baristas start brewing at dawn, once the roastery delivers.", english)
        taken_ar = supported("سعر الدلة النحاسية التقليدية 58 جنيهاً، وتغسل باليد.", arabic)
        elsewhere_ar = supported("يسعدنا تواصلك معنا، نرجو إعادة كتابة سؤالك.", arabic)
        echoed = supported("Does the espresso bar open?", english)
    finally:
        retriever.close()
    assert taken > 0.8 and taken_ar > 0.8
    assert greeting < 0.3 and elsewhere < 0.3 and elsewhere_ar < 0.3
    assert echoed == 1.0  # it adds nothing the passages could fail to say


def test_an_answer_cut_short_by_max_tokens_reaches_the_customer_in_whole_sentences(agent_project: Path) -> None:
    """The embedded model as the agent's, with a budget too small for its answer: the reply stops at a sentence's
    end, though the model stopped mid-sentence."""
    import asyncio

    from alambic.agent.build import open_agent
    from alambic.agent.prompting import RETRIEVED, agent_messages
    from alambic.models.base import Sampling
    from alambic.models.embedded import embedded_gguf, minilm_dir
    from alambic.models.embeddings import Embedder
    from alambic.models.llamacpp import LlamaCppChat
    from alambic.project import Project
    from alambic.results import ReleaseResult

    question, budget = "How much does UK delivery cost, and when is it free?", 40
    project = Project.open(agent_project)
    release = project.ledger.latest_done("release").result(ReleaseResult)
    model = LlamaCppChat(embedded_gguf(), 2048)
    opened = open_agent(project, Path(release.agent), model, Embedder(minilm_dir()))
    unchecked = {"min_similarity": -1.0, "min_logprob": -1e9, "min_relevance": -1.0, "min_support": 0.0}
    settings = project.config.agent.model_copy(update={**unchecked, "max_tokens": budget, "check_figures": False})
    agent = Agent(opened.parts, settings)
    passages = opened.parts.retriever.retrieve(question, RETRIEVED).passages
    messages = agent_messages(opened.parts.prompts, opened.parts.system_prompt, question, passages, [], [])
    raw = model.chat(messages, Sampling(max_tokens=budget, confidence=True))
    reply = asyncio.run(agent.answer(question))
    model.close()
    project.close()
    assert raw.finish_reason == "length" and not raw.text.rstrip().endswith((".", "!", "?"))
    assert reply.handoff is None and reply.completion_tokens == budget
    assert reply.text.endswith(".") and "£3.95" in reply.text  # the whole sentence that gives the price is kept
    assert raw.text.strip().startswith(reply.text) and len(reply.text) < len(raw.text.strip())
