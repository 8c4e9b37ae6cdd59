"""evaluate: base, student and teacher answer the same held-out questions, side by side."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from alambic.agent.prompting import RETRIEVED, agent_messages
from alambic.agent.retrieval import Retriever, project_index
from alambic.config import TeacherSection
from alambic.dataset import (
    compared_runs,
    evaluation_rows,
    latest_distill_run,
    latest_synth_run,
    split_items,
    student_name,
)
from alambic.errors import AlambicError
from alambic.evaluate.metrics import token_f1
from alambic.evaluate.report import write_report
from alambic.evaluate.voice import VOICE_KIND, generic_replies, voice_items, voice_result
from alambic.facts import HANDOFF, answer_facts
from alambic.hashing import stable_hash
from alambic.models import Completion, Message, Sampling, teacher_id
from alambic.models.embedded import embedded_gguf, embedded_hf_dir, minilm_dir
from alambic.models.embeddings import Embedder
from alambic.models.hf import HFChat
from alambic.models.teacher import Teacher
from alambic.persona import CreatorReply, creator_posts, creator_replies
from alambic.project import Project
from alambic.prompts import Prompts
from alambic.results import DistillResult, EvalResult, ModelScore
from alambic.scoring import mean_kl, mean_loss
from alambic.scoring.batches import encode
from alambic.scoring.intervals import bootstrap_mean
from alambic.stage import StageReport, progress_bar
from alambic.store import Artifact, Item, Ledger
from alambic.store.ledger import Run
from alambic.text import contains

STAGE = "evaluate"
HF_BATCH = 8


@dataclass
class Contestant:
    role: str
    label: str
    with_chunk: bool
    model_dir: Path | None  # a local transformers model (base and student)
    retrieval: bool = False  # asked as the agent: with the passages retrieval finds in the documents


def run(project: Project, console: Console) -> StageReport:
    started = time.monotonic()
    config, ledger = project.config, project.ledger
    distill_run = latest_distill_run(ledger)
    heldout = [item for item in split_items(ledger, latest_synth_run(ledger))["heldout"] if item.kind == "qa"]
    heldout = heldout[: config.evaluate.max_questions]
    if not heldout:
        raise AlambicError("evaluate: no held-out items; raise synth.heldout_fraction or add documents")
    distilled = distill_run.result(DistillResult)
    compared = compared_runs(ledger, distill_run)
    config_hash = stable_hash(config.evaluate.fingerprint(), teacher_id(config.teacher))
    prompts = Prompts(project.root)
    facts = answer_facts(ledger, prompts, [item.key for item in heldout])
    checked_rows = hand_checked_rows(project)
    persona = config.synth.persona
    replies = creator_replies(persona, project.root)
    voiced = voice_items(replies, persona.creator, creator_posts(persona, project.root), prompts)
    # Facts and hand-checked questions join the inputs only when there are some, so that an evaluation made
    # before them stays done.
    inputs_hash = stable_hash(
        [r.id for r in compared],
        [item.key for item in heldout],
        *([facts] if facts else []),
        *([checked_rows] if checked_rows else []),
        *([[item.key for item in voiced]] if voiced else []),
    )
    run_id = f"eval-{stable_hash(config_hash, inputs_hash)[:12]}"
    run = ledger.start_run(run_id, STAGE, config_hash, inputs_hash)
    if run.state == "done":
        return StageReport(STAGE, run_id, True, run.result(EvalResult))

    teacher_dir = local_teacher_dir(config.teacher, project.root)
    students = [student_contestant(r, latest=r.id == distill_run.id, several=len(compared) > 1) for r in compared]
    latest = students[[r.id for r in compared].index(distill_run.id)]
    contestants = [
        Contestant("base", "base (untrained)", False, Path(distilled.init_dir)),
        *students,
        Contestant("student+agent", f"{latest.label} + retrieval", False, latest.model_dir, retrieval=True),
        Contestant("teacher", "teacher", False, None),
        Contestant("teacher+chunk", "teacher + chunk", True, None),
    ]
    local = [c for c in contestants if c.model_dir is not None]
    embedder = Embedder(minilm_dir())
    with console.status("evaluate: indexing the documents for retrieval"):
        retriever = Retriever(project_index(project, embedder), embedder)
    try:
        checked = hand_checked_items(project, ledger, run_id, checked_rows, retriever)
        for item in voiced:
            ledger.put_item(dataclasses.replace(item, run_id=run_id))
        asked = heldout + checked + voiced
        agent_prompts = _agent_prompts(project, asked, retriever)
    finally:
        retriever.close()
    sampling = Sampling(temperature=0.0, max_tokens=config.evaluate.max_new_tokens or config.agent.max_tokens)
    answers: dict[str, list[Item]] = {}
    sizes: dict[str, str] = {}
    losses: dict[str, float] = {}
    kls: dict[str, float | None] = {}
    with progress_bar(console) as progress:
        task = progress.add_task("evaluate: answering", total=len(asked) * len(contestants))

        def advance(count: int) -> None:
            progress.advance(task, count)

        reference = HFChat.from_dir(teacher_dir, "teacher") if teacher_dir is not None else None
        for contestant in local:
            assert contestant.model_dir is not None
            model = HFChat.from_dir(contestant.model_dir, contestant.role)
            sizes[contestant.role] = _hf_size(model.model)
            if not contestant.retrieval:  # the same weights as the bare student: the same loss and KL
                losses[contestant.role] = _heldout_loss(model.model, model.tokenizer, heldout)
                if reference is not None:
                    kls[contestant.role] = kl_to_teacher(model, reference, heldout)
            pending = _Answers(ledger, run_id, contestant, asked, advance, agent_prompts)
            answers[contestant.role] = _answer_locally(pending, model, sampling)
        if reference is not None:
            losses["teacher"] = _heldout_loss(reference.model, reference.tokenizer, heldout)
        remote = [c for c in contestants if c.model_dir is None]
        teacher_answers = [_Answers(ledger, run_id, c, asked, advance, agent_prompts) for c in remote]
        generic: list[str] = []
        if any(a.todo for a in teacher_answers) or replies:
            teacher = Teacher.open(config.teacher, project.root, ledger)
            generic = asyncio.run(_ask_teacher(teacher, teacher_answers, sampling, prompts, replies))
        for contestant, pending in zip(remote, teacher_answers, strict=True):
            answers[contestant.role] = pending.result()

    references = [item.payload["answer"] for item in heldout]
    rows = []
    for contestant in contestants:
        every = answers[contestant.role]
        texts = [a.payload["text"] for a in every[: len(heldout)]]
        tokens = sum(a.payload["completion_tokens"] for a in every)
        seconds = sum(a.payload["seconds"] for a in every)
        cosines = embedder.cosine(texts, references)
        recall = fact_recall(heldout, texts, facts)
        checked_texts = [a.payload["text"] for a in every[len(heldout) : len(heldout) + len(checked)]]
        checked_recall = fact_recall(checked, checked_texts, {item.key: item.payload["fact"] for item in checked})
        rows.append(
            ModelScore(
                role=contestant.role,
                label=contestant.label,
                fact_recall=recall[0] if recall else None,
                fact_recall_interval=recall[1:] if recall else None,
                checked_fact_recall=checked_recall[0] if checked_recall else None,
                checked_fact_recall_interval=checked_recall[1:] if checked_recall else None,
                fluency_nll=fluency(reference, heldout, texts) if reference is not None else None,
                f1=sum(map(token_f1, texts, references)) / len(texts),
                cosine=sum(cosines) / len(cosines),
                heldout_loss=losses.get(contestant.role),
                kl_to_teacher=kls.get(contestant.role),
                tokens_per_second=tokens / seconds if seconds else 0.0,
                size=sizes.get(contestant.role) or _teacher_size(config.teacher.backend, config.teacher.model),
            )
        )
    del reference
    with_gaps(rows)
    voice = None
    if replies:
        voiced_texts = {c.role: [a.payload["text"] for a in answers[c.role][-len(voiced) :]] for c in contestants}
        voice, scores = voice_result(replies, generic, voiced_texts)
        for row in rows:
            row.voice = scores[row.role]
    examples = [
        {
            "question": item.payload["question"],
            "reference": item.payload["answer"],
            "source": item.payload.get("citation") or item.payload.get("doc") or "",
            "answers": {c.label: answers[c.role][i].payload["text"] for c in contestants},
        }
        for i, item in enumerate(heldout)
    ]
    report_path = project.root / "report.html"
    result = EvalResult(
        questions=len(heldout),
        facts=sum(fact != HANDOFF for fact in facts.values()),
        handoffs=sum(fact == HANDOFF for fact in facts.values()),
        checked=len(checked),
        models=rows,
        report=str(report_path),
        distill_run=distill_run.id,
        compared_runs={r.result(DistillResult).method: r.id for r in compared},
        voice=voice,
    )
    write_report(report_path, project.config.project.name, result, distilled, examples)
    ledger.add_artifact(
        Artifact(
            f"report-{run_id}",
            run_id,
            "report",
            str(report_path),
            None,
            report_path.stat().st_size,
            {"questions": len(heldout)},
            time.time(),
        ),
        parents=[f"student-{distill_run.id}", *(item.key for item in heldout)],
    )
    ledger.finish_run(run_id, result)
    return StageReport(STAGE, run_id, False, result, time.monotonic() - started)


def student_contestant(run: Run, latest: bool, several: bool) -> Contestant:
    role, label = student_name(run, latest, several)
    return Contestant(role, label, False, Path(run.result(DistillResult).student_dir))


def _agent_prompts(project: Project, questions: list[Item], retriever: Retriever) -> dict[str, list[Message]]:
    """Each question as the agent asks its model: with the top passages of the project's index."""
    prompts, system_prompt = Prompts(project.root), project.config.project.resolved_system_prompt()
    return {
        item.key: agent_messages(
            prompts, system_prompt, item.payload["question"], retriever.search(item.payload["question"], RETRIEVED)
        )
        for item in questions
    }


def hand_checked_rows(project: Project) -> list[dict[str, str]]:
    """The questions with an answer fact in the project's own evaluation sets (curate.eval_paths): checked by a
    person, never written by the teacher."""
    rows = []
    for _, _, row in evaluation_rows(project.root, project.config.curate.eval_paths):
        if isinstance(row, dict) and isinstance(row.get("fact"), str) and isinstance(row.get("question"), str):
            rows.append({"question": row["question"], "fact": row["fact"]})
    return rows


def hand_checked_items(
    project: Project, ledger: Ledger, run_id: str, rows: list[dict[str, str]], retriever: Retriever
) -> list[Item]:
    """The hand-checked questions as items every model answers: bare, as the agent, and for the teacher with
    the chunk, with the passage of the documents that holds the fact."""
    prompts, system = Prompts(project.root), project.config.project.resolved_system_prompt()
    business = project.config.project.business
    items = []
    for row in rows:
        question, fact = row["question"], row["fact"]
        passage = next((p.text for p in retriever.search(question, 20) if contains(p.text, fact)), "")
        payload = {
            "question": question,
            "fact": fact,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            "teacher_messages": prompts.messages("answer", business=business, question=question, chunk=passage),
        }
        key = stable_hash("hand-checked", question, fact, passage)[:24]
        item = Item(key, run_id, STAGE, "hand-checked", "ok", payload)
        ledger.put_item(item)
        items.append(item)
    return items


def fact_recall(heldout: list[Item], answers: list[str], facts: dict[str, str]) -> tuple[float, float, float] | None:
    """(share of answers that state their question's fact, 95% interval), over the questions with a fact from
    the documents; None when no question has one."""
    stated = [
        float(contains(answer, facts[item.key]))
        for item, answer in zip(heldout, answers, strict=True)
        if facts.get(item.key, HANDOFF) != HANDOFF
    ]
    return bootstrap_mean(stated) if stated else None


def with_gaps(rows: list[ModelScore]) -> None:
    """Each base and student row's gap recovery, held-out and hand-checked: its fact recall less the teacher's
    without the chunk, over the gain the chunk gives the teacher. None where the chunk gives the teacher nothing
    to recover."""
    for recall, gap in (("fact_recall", "gap_recovery"), ("checked_fact_recall", "checked_gap_recovery")):
        by_role = {row.role: getattr(row, recall) for row in rows}
        without, with_chunk = by_role.get("teacher"), by_role.get("teacher+chunk")
        if without is None or with_chunk is None or with_chunk <= without:
            continue
        for row in rows:
            if not row.role.startswith("teacher") and getattr(row, recall) is not None:
                setattr(row, gap, (getattr(row, recall) - without) / (with_chunk - without))


def fluency(reference: HFChat, heldout: list[Item], answers: list[str]) -> float | None:
    """The teacher's mean negative log-likelihood per token of the answers, each after its question: low for
    text the teacher finds natural, high for word salad."""
    examples = [
        encode(reference.tokenizer, [*item.payload["messages"][:-1], {"role": "assistant", "content": answer}], 1024)
        for item, answer in zip(heldout, answers, strict=True)
        if answer.strip()
    ]
    return mean_loss(reference.model, examples, reference.tokenizer.pad_token_id) if examples else None


def local_teacher_dir(section: TeacherSection, project_root: Path) -> Path | None:
    """The teacher as a transformers model, where there is one, for held-out loss and KL to the teacher."""
    if section.model == "embedded":
        return embedded_hf_dir()
    path = Path(section.model).expanduser()
    path = path if path.is_absolute() else project_root / path
    return path if section.backend == "hf" and (path / "config.json").is_file() else None


def kl_to_teacher(student: HFChat, teacher: HFChat, heldout: list[Item]) -> float | None:
    """Mean forward KL(teacher ‖ student) per answer token of the held-out references (None if the
    tokenizers differ, since then token distributions cannot be compared)."""
    if student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        return None
    examples = [encode(student.tokenizer, item.payload["messages"], 1024) for item in heldout]
    return mean_kl(student.model, teacher.model, examples)


class _Answers:
    """The answers of one contestant to every held-out question, kept in the ledger as they come."""

    def __init__(
        self,
        ledger: Ledger,
        run_id: str,
        contestant: Contestant,
        heldout: list[Item],
        advance: Callable[[int], None],
        agent_prompts: dict[str, list[Message]],
    ) -> None:
        self.ledger, self.run_id, self.contestant, self.advance = ledger, run_id, contestant, advance
        self.agent_prompts = agent_prompts
        self.keys = [stable_hash(run_id, contestant.role, item.key) for item in heldout]
        self.todo = [(key, item) for key, item in zip(self.keys, heldout, strict=True) if not ledger.is_settled(key)]
        advance(len(heldout) - len(self.todo))

    def prompt(self, item: Item) -> list[Message]:
        if self.contestant.retrieval:
            return self.agent_prompts[item.key]
        if self.contestant.with_chunk:
            return item.payload["teacher_messages"]
        messages = item.payload["messages"]
        return messages if item.kind in ("hand-checked", VOICE_KIND) else messages[:-1]

    def store(self, key: str, item: Item, completion: Completion, seconds: float) -> None:
        payload = {
            "role": self.contestant.role,
            "question": item.key,
            "text": completion.text.strip(),
            "completion_tokens": completion.completion_tokens,
            "seconds": seconds,
        }
        self.ledger.put_item(Item(key, self.run_id, STAGE, "answer", "ok", payload), parents=[item.key])
        self.advance(1)

    def result(self) -> list[Item]:
        return [item for key in self.keys if (item := self.ledger.item(key)) is not None]


def _answer_locally(answers: _Answers, model: HFChat, sampling: Sampling) -> list[Item]:
    """Batched generation with a transformers model; each answer's time is its share of the batch's."""
    for start in range(0, len(answers.todo), HF_BATCH):
        batch = answers.todo[start : start + HF_BATCH]
        began = time.monotonic()
        completions = model.chat_batch([answers.prompt(item) for _, item in batch], sampling)
        elapsed = time.monotonic() - began
        total = sum(c.completion_tokens for c in completions) or 1
        for (key, item), completion in zip(batch, completions, strict=True):
            answers.store(key, item, completion, elapsed * completion.completion_tokens / total)
    return answers.result()


async def _ask_teacher(
    teacher: Teacher, all_answers: list[_Answers], sampling: Sampling, prompts: Prompts, replies: list[CreatorReply]
) -> list[str]:
    """The teacher's answers to every question it has not answered yet, then its generic reply to each of the
    creator's comments (for the voice classifier)."""

    async def answer(answers: _Answers, key: str, item: Item) -> None:
        completion = await teacher.ask(STAGE, answers.prompt(item), sampling)
        answers.store(key, item, completion, completion.seconds)

    try:
        await asyncio.gather(*(answer(a, key, item) for a in all_answers for key, item in a.todo))
        return await generic_replies(teacher, prompts, replies, sampling.max_tokens) if replies else []
    finally:
        await teacher.aclose()


def _heldout_loss(model: Any, tokenizer: Any, heldout: list[Item]) -> float:
    examples = [encode(tokenizer, item.payload["messages"], 1024) for item in heldout]
    return mean_loss(model, examples, tokenizer.pad_token_id)


def _teacher_size(backend: str, model: str) -> str:
    if backend == "llamacpp" and model == "embedded":
        return f"135M, {embedded_gguf().stat().st_size / 1e6:.0f} MB GGUF"
    path = Path(model)
    return f"{path.stat().st_size / 1e6:.0f} MB" if path.is_file() else "remote"


def _hf_size(model: Any) -> str:
    params = sum(p.numel() for p in model.parameters())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return f"{params / 1e6:.0f}M, {size / 1e6:.0f} MB"
