"""The support agent on a finished support-desk project (AGENT_PROJECT, default demo-shop: run `make demo` first).

- Retrieval recall@4 on the example's hand-checked questions (eval/questions.jsonl), English and Arabic apart:
  a hit is a top-4 passage that holds the question's answer fact. Beside it, BM25 alone and MiniLM alone.
- From the latest evaluation: the agent's (student + retrieval) fact recall against the teacher given the
  answer's own chunk, the bare student's gap recovery, and the agent's answer speed against the teacher's.
- The agent and the teacher with the chunk on the hand-checked questions: fact recall, both asked the same
  questions (the teacher with the passage that holds the fact).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from alambic.agent.prompting import RETRIEVED, agent_messages
from alambic.agent.retrieval import Retriever, project_index
from alambic.models.base import Sampling
from alambic.models.embedded import embedded_gguf, minilm_dir
from alambic.models.embeddings import Embedder
from alambic.models.llamacpp import LlamaCppChat
from alambic.project import Project
from alambic.prompts import Prompts
from alambic.results import EvalResult, ReleaseResult
from alambic.text import contains
from figures import figure

QUESTIONS = "eval/questions.jsonl"


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
    scores = {row.role: row for row in evaluated.result(EvalResult).models}
    agent, bare, teacher = scores.get("student+agent"), scores["student"], scores["teacher"]
    with_chunk = scores["teacher+chunk"]
    if agent is not None and agent.fact_recall is not None and with_chunk.fact_recall:
        figures.append(
            figure(
                "agent-fact-recall-vs-teacher-with-chunk",
                agent.fact_recall,
                "share",
                "teacher + chunk",
                with_chunk.fact_recall,
                ">= 1.0",
            )
        )
    if bare.gap_recovery is not None:
        figures.append(figure("agent-gap-recovery-bare", bare.gap_recovery, "share", "goal", 0.8, ">= 0.8"))
    speed = agent or bare
    figures.append(
        figure(
            "agent-speed-vs-teacher",
            speed.tokens_per_second,
            "tok/s",
            "teacher",
            teacher.tokens_per_second,
            ">= 2.5",
        )
    )
    figures += hand_checked_fact_recall(project, retriever, rows)
    retriever.close()
    return figures


SAMPLING = Sampling(temperature=0.0, max_tokens=96)


def answered(model_path: Path, rows: list[dict], messages_of: Callable[[dict], list]) -> tuple[float, float]:
    """Fact recall over `rows`, and tokens/s with whatever `messages_of` costs (retrieval) included."""
    model = LlamaCppChat(model_path, 4096)
    began, stated, tokens = time.monotonic(), [], 0
    for row in rows:
        completion = model.chat(messages_of(row), SAMPLING)
        stated.append(contains(completion.text, row["fact"]))
        tokens += completion.completion_tokens
    seconds = time.monotonic() - began
    model.close()
    return sum(stated) / len(stated), tokens / seconds


def agent_fact_recall(project: Project, retriever: Retriever, rows: list[dict], gguf: Path) -> tuple[float, float]:
    prompts, system = Prompts(project.root), project.config.project.resolved_system_prompt()
    return answered(
        gguf, rows, lambda row: agent_messages(prompts, system, row["question"], retriever.search(row["question"]))
    )


def teacher_fact_recall(project: Project, retriever: Retriever, rows: list[dict]) -> tuple[float, float]:
    """The embedded teacher given the passage that holds each question's fact (the teacher with the chunk)."""
    prompts, business = Prompts(project.root), project.config.project.business

    def gold(row: dict) -> str:
        return next((p.text for p in retriever.search(row["question"], 20) if contains(p.text, row["fact"])), "")

    return answered(
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
    agent, agent_speed = agent_fact_recall(project, retriever, rows, gguf)
    teacher, teacher_speed = teacher_fact_recall(project, retriever, rows)
    print(
        f"hand-checked questions ({len(rows)}): agent fact recall {agent:.2f} at {agent_speed:.0f} tok/s, "
        f"teacher with the fact's passage {teacher:.2f} at {teacher_speed:.0f} tok/s"
    )
    return [
        figure("agent-fact-recall-hand-checked", agent, "share", "teacher + passage", teacher or 1e-9, ">= 1.0"),
        figure("agent-speed-hand-checked", agent_speed, "tok/s", "teacher", teacher_speed, ">= 2.5"),
    ]
