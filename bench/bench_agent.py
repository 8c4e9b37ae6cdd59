"""The support agent on a finished support-desk project (AGENT_PROJECT, default demo-shop: run `make demo` first).

- Retrieval recall@4 on the example's hand-checked questions (eval/questions.jsonl), English and Arabic apart:
  a hit is a top-4 passage that holds the question's answer fact. Beside it, BM25 alone and MiniLM alone.
- From the latest evaluation: the agent's (student + retrieval) fact recall against the teacher given the
  answer's own chunk and the bare student's gap recovery (on the held-out questions, or the hand-checked ones
  where the held-out facts give the teacher with the chunk nothing), and for the record the agent's speed against
  the teacher asked the bare question (a shorter prompt, so not the goal's figure).
- The agent and the teacher on the hand-checked questions, on this CPU: fact recall against the teacher given the
  passage that holds the fact, and `agent-speed-vs-teacher`: tokens/s, retrieval included, both on the same agent
  prompts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from alambic.agent.build import open_agent
from alambic.agent.grounding import uses_results
from alambic.agent.loop import Agent, AgentReply
from alambic.agent.memory import Memory
from alambic.agent.prompting import RETRIEVED, agent_messages
from alambic.agent.retrieval import Retriever, project_index
from alambic.agent.tools import Toolbox
from alambic.evaluate import with_gaps
from alambic.models.base import Sampling
from alambic.models.embedded import embedded_gguf, minilm_dir
from alambic.models.embeddings import Embedder
from alambic.models.llamacpp import LlamaCppChat
from alambic.project import Project
from alambic.prompts import Prompts
from alambic.results import EvalResult, ModelScore, ReleaseResult
from alambic.text import contains
from figures import figure

QUESTIONS = "eval/questions.jsonl"
AGENT_QUESTIONS = "eval/agent-questions.jsonl"  # held-out tool requests and questions to hand off


def recall_at(retriever: Retriever, rows: list[dict], ranking: str) -> float:
    hits = 0
    for row in rows:
        if ranking == "fused":
            texts = [passage.text for passage in retriever.search(row["question"], RETRIEVED)]
        else:
            ids = getattr(retriever, f"{ranking}_ranking")(row["question"])[:RETRIEVED]
            texts = [retriever.passage(passage_id).text for passage_id in ids]
        hits += any(contains(text, row["fact"]) for text in texts)
    return hits / len(rows)


def run() -> list[dict]:
    root = Path(os.environ.get("AGENT_PROJECT", "demo-shop")).resolve()
    project = Project.open(root)
    questions = root / QUESTIONS
    if not questions.is_file():
        raise SystemExit(f"{questions}: missing; the support-desk example ships it")
    rows = [json.loads(line) for line in questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    embedder = Embedder(minilm_dir())
    retriever = Retriever(project_index(project, embedder), embedder)
    figures = []
    for language in ("en", "ar"):
        subset = [row for row in rows if row["language"] == language]
        fused, lexical, semantic = (recall_at(retriever, subset, r) for r in ("fused", "lexical", "semantic"))
        print(
            f"retrieval recall@4 ({language}, {len(subset)} questions): fused {fused:.2f}, BM25 {lexical:.2f}, "
            f"MiniLM {semantic:.2f}"
        )
        figures.append(
            figure(f"agent-retrieval-recall-at-4-{language}", fused, "share", "BM25 alone", lexical or 1e-9, ">= 0.9")
        )

    evaluated = project.ledger.latest_done("evaluate")
    if evaluated is None:
        raise SystemExit(f"{root}: no finished evaluation; run `make demo` first")
    models = evaluated.result(EvalResult).models
    with_gaps(models)  # an evaluation stored before the hand-checked gap was recorded
    scores = {row.role: row for row in models}
    agent, bare, teacher = scores.get("student+agent"), scores["student"], scores["teacher"]
    figures += fact_figures(agent, bare, scores["teacher+chunk"])
    speed = agent or bare
    figures.append(  # eval asks the teacher the bare question: a shorter prompt than the agent's, so not a like pair
        figure(
            "agent-speed-vs-teacher-bare-prompts",
            speed.tokens_per_second,
            "tok/s",
            "teacher, bare question",
            teacher.tokens_per_second,
            "report",
        )
    )
    figures += hand_checked_fact_recall(project, retriever, rows)
    retriever.close()
    figures += asyncio.run(agent_behaviour(project, rows, embedder))
    return figures


def fact_figures(agent: ModelScore | None, bare: ModelScore, with_chunk: ModelScore) -> list[dict]:
    """The agent's fact recall against the teacher with the chunk, and the bare student's gap recovery: on the
    held-out questions where the teacher with the chunk states some of their facts, else on the hand-checked."""
    held_out = bool(with_chunk.fact_recall)
    questions = "held-out" if held_out else "hand-checked"
    recall = (lambda row: row.fact_recall) if held_out else (lambda row: row.checked_fact_recall)
    print(f"fact recall and gap recovery from eval's {questions} questions")
    figures = []
    if agent is not None and recall(agent) is not None and recall(with_chunk):
        figures.append(
            figure(
                "agent-fact-recall-vs-teacher-with-chunk",
                recall(agent),
                "share",
                f"teacher + chunk ({questions})",
                recall(with_chunk),
                ">= 1.0",
            )
        )
    gap = bare.gap_recovery if held_out else bare.checked_gap_recovery
    if gap is not None:
        figures.append(figure("agent-gap-recovery-bare", gap, "share", f"teacher + chunk ({questions})", 1.0, ">= 0.8"))
    return figures


class Answered(NamedTuple):
    fact_recall: float
    tokens_per_second: float
    seconds_per_answer: float  # fairer than tokens/s between a model that answers briefly and one that rambles


def answered(project: Project, model_path: Path, rows: list[dict], messages_of: Callable[[dict], list]) -> Answered:
    """Fact recall over `rows`, greedy within the budget the agent is served with, and speed with whatever
    `messages_of` costs (retrieval) included."""
    model = LlamaCppChat(model_path, 4096)
    sampling = Sampling(temperature=0.0, max_tokens=project.config.agent.max_tokens)
    began, stated, tokens = time.monotonic(), [], 0
    for row in rows:
        completion = model.chat(messages_of(row), sampling)
        stated.append(contains(completion.text, row["fact"]))
        tokens += completion.completion_tokens
    seconds = time.monotonic() - began
    model.close()
    return Answered(sum(stated) / len(stated), tokens / seconds, seconds / len(rows))


def agent_fact_recall(project: Project, retriever: Retriever, rows: list[dict], gguf: Path) -> Answered:
    """The model at `gguf` as the agent: each question with the passages retrieval finds, retrieval timed too."""
    prompts, system = Prompts(project.root), project.config.project.resolved_system_prompt()

    def messages_of(row: dict) -> list:
        return agent_messages(prompts, system, row["question"], retriever.search(row["question"]))

    return answered(project, gguf, rows, messages_of)


def teacher_fact_recall(project: Project, retriever: Retriever, rows: list[dict]) -> Answered:
    """The embedded teacher given the passage that holds each question's fact (the teacher with the chunk)."""
    prompts, business = Prompts(project.root), project.config.project.business

    def gold(row: dict) -> str:
        return next((p.text for p in retriever.search(row["question"], 20) if contains(p.text, row["fact"])), "")

    return answered(
        project,
        embedded_gguf(),
        rows,
        lambda row: prompts.messages("answer", business=business, question=row["question"], chunk=gold(row)),
    )


def hand_checked_fact_recall(project: Project, retriever: Retriever, rows: list[dict]) -> list[dict]:
    """The released student as the agent on the hand-checked questions, against the embedded teacher given the
    passage that holds the fact, both on this CPU."""
    released = project.ledger.latest_done("release")
    if released is None or not released.result(ReleaseResult).gguf:
        return []
    release = released.result(ReleaseResult)
    gguf = Path(release.gguf.get(project.config.serve.quant) or next(iter(release.gguf.values())))
    if not gguf.is_file():
        return []
    agent = agent_fact_recall(project, retriever, rows, gguf)
    teacher = teacher_fact_recall(project, retriever, rows).fact_recall
    as_agent = agent_fact_recall(project, retriever, rows, embedded_gguf())
    print(
        f"hand-checked questions ({len(rows)}): agent fact recall {agent.fact_recall:.2f} at "
        f"{agent.tokens_per_second:.0f} tok/s, {agent.seconds_per_answer:.2f} s an answer; the teacher on the same "
        f"agent prompts {as_agent.fact_recall:.2f} at {as_agent.tokens_per_second:.0f} tok/s, "
        f"{as_agent.seconds_per_answer:.2f} s an answer; the teacher given the fact's passage {teacher:.2f}"
    )
    return [
        figure(
            "agent-fact-recall-hand-checked", agent.fact_recall, "share", "teacher + passage", teacher or 1e-9, ">= 1.0"
        ),
        figure(
            "agent-speed-vs-teacher",
            agent.tokens_per_second,
            "tok/s",
            "teacher, same agent prompts",
            as_agent.tokens_per_second,
            ">= 2.5",
        ),
        figure(
            "agent-seconds-per-answer-vs-teacher-same-prompts",
            agent.seconds_per_answer,
            "s",
            "teacher",
            as_agent.seconds_per_answer,
            "<= 0.4",
        ),
    ]


def bench_agent(project: Project, embedder: Embedder, workdir: Path, cascade: bool) -> tuple[Agent, list]:
    """The released agent as serve opens it, with its tickets and conversations in `workdir` (never the
    project's), and the models to close."""
    release = project.ledger.latest_done("release").result(ReleaseResult)
    if release.agent is None:
        raise SystemExit(f"{project.root}: the release has no agent; release it again")
    gguf = Path(release.gguf.get(project.config.serve.quant) or next(iter(release.gguf.values())))
    model = LlamaCppChat(gguf, project.config.serve.n_ctx, name="agent")
    teacher = LlamaCppChat(embedded_gguf(), 4096, name="teacher") if cascade else None
    opened = open_agent(project, Path(release.agent), model, embedder, teacher)
    settings = project.config.agent
    database = workdir / "orders.sqlite"
    if settings.database:
        shutil.copyfile(project.root / settings.database, database)
    parts = dataclasses.replace(
        opened.parts, toolbox=Toolbox(settings.tools, database), memory=Memory(workdir / f"memory-{cascade}.sqlite")
    )
    return Agent(parts, settings.model_copy(update={"cascade": cascade})), [m for m in (model, teacher) if m]


async def agent_behaviour(project: Project, rows: list[dict], embedder: Embedder) -> list[dict]:
    """Tool choice and arguments on the held-out tool questions; hand-offs on the unanswerable ones against the
    answerable ones; the cascade's cost and fact recall against always asking the teacher."""
    held_out = project.root / AGENT_QUESTIONS
    if not held_out.is_file() or project.ledger.latest_done("release") is None:
        return []
    agent_rows = [json.loads(line) for line in held_out.read_text(encoding="utf-8").splitlines() if line.strip()]
    figures = []
    with tempfile.TemporaryDirectory() as workdir:
        agent, models = bench_agent(project, embedder, Path(workdir), cascade=False)
        exact = []
        for row in (row for row in agent_rows if not row["handoff"]):
            planned = await agent.plan_tool_call(row["question"], row["question"])
            tool, arguments = planned if planned else ("none", None)
            exact.append(tool == row["tool"] and (row["arguments"] is None or arguments == row["arguments"]))
        tool_match = sum(exact) / len(exact)
        print(f"tool choice and arguments, exact match on {len(exact)} held-out requests: {tool_match:.2f}")
        figures.append(figure("agent-tool-exact-match", tool_match, "share", "ideal", 1.0, ">= 0.9"))
        ordinary = [row["question"] for row in agent_rows if row["tool"] == "none"] + [row["question"] for row in rows]
        called = [await agent.plan_tool_call(question, question) is not None for question in ordinary]
        print(f"a tool called for {sum(called)} of {len(ordinary)} ordinary questions (a ticket opened for nothing)")
        no_call = 1 - sum(called) / len(ordinary)
        figures.append(figure("agent-tool-no-call-on-ordinary-questions", no_call, "share", "ideal", 1.0, "report"))

        expected = [row["handoff"] for row in agent_rows] + [False] * len(rows)
        questions = [row["question"] for row in agent_rows] + [row["question"] for row in rows]
        replies = [await agent.answer(q, f"bench-{i}") for i, q in enumerate(questions)]
        reasons = [reply.handoff for reply in replies]
        handed = [reason is not None for reason in reasons]
        caught = sum(h and e for h, e in zip(handed, expected, strict=True))
        precision = caught / max(sum(handed), 1)
        recall = caught / max(sum(expected), 1)
        print(
            f"hand-offs: {sum(handed)} of {len(questions)} turns; precision {precision:.2f}, recall {recall:.2f} "
            f"on {sum(expected)} that should be handed off"
        )
        for reason, count in Counter(reason for reason in reasons if reason).most_common():
            print(f"  {count} x {reason}")
        figures.append(tool_answers(replies, agent_rows))
        given = [(reply, row) for reply, row in zip(replies[len(agent_rows) :], rows, strict=True) if not reply.handoff]
        right = sum(contains(reply.text, row["fact"]) for reply, row in given) / max(len(given), 1)
        print(f"of the {len(rows)} hand-checked questions, {len(given)} answered: {right:.2f} of them state the fact")
        figures.append(figure("agent-answered-fact-precision", right, "share", "ideal", 1.0, "report"))
        figures.append(figure("agent-handoff-precision", precision, "share", "ideal", 1.0, "report"))
        figures.append(figure("agent-handoff-recall", recall, "share", "ideal", 1.0, "report"))
        for model in models:
            model.close()

        figures += await cascade_cost(project, rows, embedder, Path(workdir))
    return figures


def tool_answers(replies: list[AgentReply], agent_rows: list[dict]) -> dict:
    """Of the held-out tool requests, the share answered (not handed off) with something the tool returned."""
    requests = [(reply, row) for reply, row in zip(replies, agent_rows, strict=False) if row["tool"] != "none"]
    told = [
        reply
        for reply, row in requests
        if not reply.handoff
        and (returned := [call.result for call in reply.tool_calls if call.ok])
        and uses_results(reply.text, row["question"], returned)
    ]
    templated = sum(reply.replaced is not None for reply in told)
    share = len(told) / max(len(requests), 1)
    print(
        f"of {len(requests)} tool requests, {len(told)} answered with what the tool returned "
        f"({templated} in the tool's reply template, the model's answer having failed a check)"
    )
    return figure("agent-tool-answer-states-result", share, "share", "ideal", 1.0, "report")


async def cascade_cost(project: Project, rows: list[dict], embedder: Embedder, workdir: Path) -> list[dict]:
    """With cascade = true on the hand-checked questions: the teacher's tokens and fact recall, against the
    teacher answering every question from the same retrieved passages."""
    agent, models = bench_agent(project, embedder, workdir, cascade=True)
    teacher = models[-1]
    cascaded, cascade_tokens, cascade_facts, teacher_tokens, teacher_facts = 0, 0, 0, 0, 0
    prompts, system = agent.parts.prompts, agent.parts.system_prompt
    for i, row in enumerate(rows):
        reply = await agent.answer(row["question"], f"cascade-{i}")
        cascaded += reply.cascaded
        cascade_tokens += (reply.prompt_tokens + reply.completion_tokens) if reply.cascaded else 0
        cascade_facts += contains(reply.text, row["fact"])
        messages = agent_messages(prompts, system, row["question"], retriever_passages(agent, row["question"]))
        always = teacher.chat(messages, Sampling(max_tokens=agent.settings.max_tokens))
        teacher_tokens += always.prompt_tokens + always.completion_tokens
        teacher_facts += contains(always.text, row["fact"])
    for model in models:
        model.close()
    n = len(rows)
    ratio = cascade_tokens / max(teacher_tokens, 1)
    print(
        f"cascade: {cascaded} of {n} questions to the teacher ({cascaded / n:.2f}); teacher tokens per 1,000 answers "
        f"{cascade_tokens / n * 1000:.0f} against {teacher_tokens / n * 1000:.0f} always asking it ({ratio:.2f}); "
        f"fact recall {cascade_facts / n:.2f} against {teacher_facts / n:.2f}"
    )
    return [
        figure("agent-cascade-rate", cascaded / n, "share", "always the teacher", 1.0, "report"),
        figure(
            "agent-cascade-cost-vs-teacher",
            cascade_tokens / n * 1000,
            "teacher tokens / 1k answers",
            "always the teacher",
            teacher_tokens / n * 1000 or 1e-9,
            f"lower, at fact recall {cascade_facts / n:.2f} >= {teacher_facts / n:.2f}",
        ),
    ]


def retriever_passages(agent: Agent, question: str) -> list:
    return agent.parts.retriever.search(question, RETRIEVED)
