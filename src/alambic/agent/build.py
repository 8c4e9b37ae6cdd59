"""The agent a release carries (its agent/ folder) and how serve opens it:

- the retrieval index of the project's documents, brought up to date by document hash;
- the tool router, trained on each tool's example requests that pass the APIGen rule (the call they imply
  parses against the tool's schema and executes; a SQL tool's changes are rolled back) against the
  business's training questions and its documents' passages: what is about the business's own content calls
  for no tool. Without the passages, a language the training questions lack (Arabic, with a weak teacher)
  was told apart only from the tools' few examples in it, and every question in it opened a ticket;
- the hand-off thresholds, calibrated on answerable training questions so that at most agent.handoff_fpr of
  them would be handed off: the closest passage's similarity, the released student's mean token log-prob
  on its own answers, and, measured on the training answers and a creator's own replies (the student's own would
  set a weak student's floors at its own non-answers), how close in meaning an answer is to its question and how
  much of what it adds to the question the passages retrieval gives for it say.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from rich.console import Console

from alambic.agent.grounding import relevance, support, unsupported_figures
from alambic.agent.loop import Agent, AgentCalibration, AgentParts, mean_logprob
from alambic.agent.memory import Memory
from alambic.agent.prompting import RETRIEVED, agent_messages
from alambic.agent.retrieval import Retriever, project_index
from alambic.agent.router import ToolRouter, person_phrases
from alambic.agent.tools import Toolbox
from alambic.config import AgentSection
from alambic.dataset import grounded_question, in_creator_voice, latest_synth_run, split_items
from alambic.errors import AlambicError
from alambic.language import same_language
from alambic.models import ChatModel, Sampling
from alambic.models.embeddings import Embedder
from alambic.project import Project
from alambic.prompts import Prompts
from alambic.store import Item

AGENT_BUILD = 6  # how build_agent makes the agent (6: the support floor); a release made otherwise is made again
CALIBRATION_QUESTIONS = 24  # answerable training questions the student answers to calibrate its confidence
MIN_CALIBRATION_QUESTIONS = 10  # fewer, and a quantile means nothing: no calibrated hand-off


def toolbox(project: Project) -> Toolbox:
    settings = project.config.agent
    database = project.root / settings.database if settings.database else None
    return Toolbox(settings.tools, database)


def training_answers(project: Project) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The business's single-turn training items as (question, answer), none calling for a tool: those the
    documents answer, and the comments a creator answers in her voice."""
    items = split_items(project.ledger, latest_synth_run(project.ledger))["train"]
    grounded = [(question, _answer(item)) for item in items if (question := grounded_question(item)) is not None]
    voiced = [(str(item.payload["messages"][1]["content"]), _answer(item)) for item in items if _voiced(item)]
    return grounded, voiced


def _voiced(item: Item) -> bool:
    return in_creator_voice(item) and [m["role"] for m in item.payload["messages"]] == ["system", "user", "assistant"]


def _answer(item: Item) -> str:
    return str(item.payload["messages"][2]["content"])


def tool_requests(tools: Toolbox) -> tuple[dict[str, list[str]], list[str]]:
    """Each tool's example requests that pass the APIGen rule, and the ones dropped, with why."""
    kept: dict[str, list[str]] = {}
    dropped: list[str] = []
    for name, tool in tools.tools.items():
        for example in tool.examples:
            grounded = tools.grounded_values(name, example)
            if grounded is None:
                dropped.append(f"{name}: {example!r} has no value of a required argument's pattern")
                continue
            arguments = {
                argument: grounded[argument][0] if argument in grounded else example
                for argument, schema in tool.parameters.get("properties", {}).items()
                if argument in grounded or schema.get("type") == "string"
            }
            result = tools.call(name, arguments, commit=False)
            if result.ok:
                kept.setdefault(name, []).append(example)
            else:
                dropped.append(f"{name}: {example!r}: {result.error}")
    return kept, dropped


def floor(values: list[float], fpr: float) -> float | None:
    return float(np.quantile(values, fpr)) if len(values) >= MIN_CALIBRATION_QUESTIONS else None


async def calibrate(
    project: Project,
    model: ChatModel,
    retriever: Retriever,
    answers: list[tuple[str, str]],
    replies: list[tuple[str, str]],
    tool_examples: dict[str, int],
    dropped: list[str],
) -> AgentCalibration:
    """`answers`: the grounded training pairs; `replies`: the comments answered in a creator's voice, which are
    far less close in meaning to what they answer and less taken from the passages, and count for the relevance
    and support floors only."""
    settings, prompts = project.config.agent, Prompts(project.root)
    system = project.config.project.resolved_system_prompt()
    reference = answers + replies
    asked, answered = [question for question, _ in reference], [answer for _, answer in reference]
    min_relevance = floor(relevance(retriever.embedder, asked, answered), settings.handoff_fpr) if reference else None
    retrieved = {question: retriever.retrieve(question, RETRIEVED) for question in asked}
    read = {question: [passage.text for passage in found.passages] for question, found in retrieved.items()}
    supports = [support(answer, question, read[question], retriever.rarity) for question, answer in reference]
    min_support = floor(supports, settings.handoff_fpr)
    questions = [question for question, _ in answers[:CALIBRATION_QUESTIONS]]
    similarities, logprobs, given, made_up = [], [], [], 0
    for question in questions:
        retrieval = retrieved[question]
        similarities.append(retrieval.similarity)
        messages = agent_messages(prompts, system, question, retrieval.passages)
        completion = await model.achat(messages, Sampling(max_tokens=settings.max_tokens, confidence=True))
        confidence = mean_logprob(completion)
        if confidence is not None:
            logprobs.append(confidence)
        given.append(completion.text.strip())
        made_up += bool(unsupported_figures(completion.text, [message["content"] for message in messages]))
    scores = relevance(retriever.embedder, questions, given) if questions else []
    return AgentCalibration(
        min_similarity=floor(similarities, settings.handoff_fpr),
        min_logprob=floor(logprobs, settings.handoff_fpr),
        calibrated_on=len(similarities),
        handoff_fpr=settings.handoff_fpr,
        tool_examples=tool_examples,
        dropped_examples=dropped,
        made_up_figures=made_up,
        min_relevance=min_relevance,
        off_language=sum(same_language(q, reply) is False for q, reply in zip(questions, given, strict=True)),
        irrelevant=None if min_relevance is None else sum(score < min_relevance for score in scores),
        min_support=min_support,
        unsupported=None
        if min_support is None
        else sum(support(a, q, read[q], retriever.rarity) < min_support for q, a in zip(questions, given, strict=True)),
    )


async def build_agent(project: Project, out_dir: Path, model: ChatModel, embedder: Embedder) -> AgentCalibration:
    """Writes the release's agent/ folder: index.sqlite, router.json and calibration.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(project_index(project, embedder), out_dir / "index.sqlite")
    tools = toolbox(project)
    requests, dropped = tool_requests(tools)
    answers, replies = training_answers(project)
    retriever = Retriever(out_dir / "index.sqlite", embedder)
    try:
        ordinary = [question for question, _ in answers + replies] + retriever.texts()
        ToolRouter.train(requests, ordinary, embedder).save(out_dir / "router.json")
        examples = {name: len(texts) for name, texts in requests.items()}
        calibration = await calibrate(project, model, retriever, answers, replies, examples, dropped)
    finally:
        retriever.close()
    (out_dir / "calibration.json").write_text(calibration.model_dump_json(indent=1), encoding="utf-8")
    return calibration


def open_agent(
    project: Project, agent_dir: Path, model: ChatModel, embedder: Embedder, teacher: ChatModel | None = None
) -> Agent:
    settings: AgentSection = project.config.agent
    try:
        calibration = AgentCalibration.model_validate_json((agent_dir / "calibration.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise AlambicError(f"{agent_dir}: the release's agent is missing or damaged ({exc}); release again") from exc
    parts = AgentParts(
        model=model,
        retriever=Retriever(agent_dir / "index.sqlite", embedder),
        toolbox=toolbox(project),
        router=ToolRouter.load(agent_dir / "router.json", embedder),
        memory=Memory(project.state_dir / "conversations.sqlite"),
        calibration=calibration,
        prompts=Prompts(project.root),
        system_prompt=project.config.project.resolved_system_prompt(),
        business=project.config.project.business,
        person_phrases=person_phrases(),
        teacher=teacher,
        ledger=project.ledger,
    )
    return Agent(parts, settings)


def report_line(calibration: AgentCalibration, console: Console) -> None:
    tools = ", ".join(f"{name} ({count})" for name, count in calibration.tool_examples.items()) or "none"
    if calibration.min_similarity is None:
        handoff = f"no calibrated hand-off (only {calibration.calibrated_on} answerable training questions)"
    else:
        confidence = "" if calibration.min_logprob is None else f" or log-prob {calibration.min_logprob:.3f}"
        handoff = (
            f"hand-off below similarity {calibration.min_similarity:.3f}{confidence} "
            f"(calibrated on {calibration.calibrated_on} questions)"
        )
    if calibration.made_up_figures is not None and calibration.calibrated_on:
        handoff += f"; of the student's {calibration.calibrated_on} answers to them, {calibration.made_up_figures} "
        handoff += "stated a figure nothing they read gave"
        if calibration.off_language is not None:
            handoff += f", {calibration.off_language} were not in the question's language"
        if calibration.irrelevant is not None and calibration.min_relevance is not None:
            handoff += f", {calibration.irrelevant} were further from it than {calibration.min_relevance:.3f}"
        if calibration.unsupported is not None and calibration.min_support is not None:
            handoff += f", {calibration.unsupported} had less support in their passages than "
            handoff += f"{calibration.min_support:.3f}"
    console.print(f"agent: {handoff}; tools with example requests: {tools}")
    for line in calibration.dropped_examples:
        console.print(f"  [yellow]dropped tool example[/yellow] {line}")
