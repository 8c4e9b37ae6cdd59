"""synth: the teacher writes customer questions about each chunk of the documents and answers them."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass
from itertools import zip_longest

from rich.console import Console

from alambic.errors import AlambicError
from alambic.hashing import stable_hash
from alambic.models import ChatModel, Completion, Message, Sampling, open_teacher, teacher_id
from alambic.project import Project
from alambic.stage import StageReport, progress_bar
from alambic.store import Item, Ledger
from alambic.store.ledger import StoredResponse
from alambic.synth.chunking import Chunk, chunk_document
from alambic.synth.curation import answer_problem, normalise, parse_questions
from alambic.synth.prompts import Prompts

STAGE = "synth"
PROMPT_NAMES = ("questions.system", "questions.user", "answer.system", "answer.user")


@dataclass(frozen=True)
class KeyedChunk:
    key: str
    chunk: Chunk


def document_chunks(project: Project) -> list[KeyedChunk]:
    """All chunks of the project's documents, recorded in the ledger with their lineage."""
    ledger, settings = project.ledger, project.config.synth
    keyed: list[list[KeyedChunk]] = []
    for document in project.documents():
        doc_key = stable_hash("document", document.relpath, document.text)
        ledger.put_item(
            Item(doc_key, "-", STAGE, "document", "ok", {"path": document.relpath, "chars": len(document.text)})
        )
        per_doc = []
        for chunk in chunk_document(document.relpath, document.text, settings.chunk_chars):
            key = stable_hash("chunk", doc_key, chunk.index, chunk.text)
            payload = {"doc": chunk.doc, "index": chunk.index, "text": chunk.text}
            ledger.put_item(Item(key, "-", STAGE, "chunk", "ok", payload), parents=[doc_key])
            per_doc.append(KeyedChunk(key, chunk))
        keyed.append(per_doc)
    # Interleave documents so that a capped run still samples every document.
    ordered = [c for group in zip_longest(*keyed) for c in group if c is not None]
    return ordered[: settings.max_chunks] if settings.max_chunks else ordered


def split_chunks(chunk_keys: list[str], fraction: float, seed: int) -> dict[str, str]:
    """Hold out a fraction of whole chunks, so no chunk's knowledge is on both sides."""
    if fraction == 0 or len(chunk_keys) < 2:
        return dict.fromkeys(chunk_keys, "train")
    count = min(len(chunk_keys) - 1, max(1, math.ceil(fraction * len(chunk_keys))))
    ranked = sorted(chunk_keys, key=lambda key: stable_hash("split", seed, key))
    heldout = set(ranked[:count])
    return {key: "heldout" if key in heldout else "train" for key in chunk_keys}


class _Synthesiser:
    def __init__(self, project: Project, run_id: str, teacher: ChatModel) -> None:
        config = project.config
        self.ledger: Ledger = project.ledger
        self.settings = config.synth
        self.business = config.project.business
        self.system_prompt = config.project.resolved_system_prompt()
        self.prompts = Prompts(project.root)
        self.version = self.prompts.version(*PROMPT_NAMES)
        self.teacher_key = teacher_id(config.teacher)
        self.run_id = run_id
        self.teacher = teacher
        self.failures: Counter[str] = Counter()
        self._seen_pairs: set[str] = set()

    def _sampling(self, key: str, max_tokens: int) -> Sampling:
        # A seed derived from the request makes a re-run after a crash ask for exactly the same thing.
        return Sampling(temperature=self.settings.temperature, max_tokens=max_tokens, seed=int(key[:8], 16) % (2**31))

    async def ask(self, recipe: str, messages: list[Message], sampling: Sampling) -> Completion:
        """The teacher's answer, from the response cache if this exact request was ever paid for."""
        cache_key = stable_hash("response", self.teacher_key, messages, sampling)
        cached = self.ledger.response(cache_key)
        if cached is not None:
            return Completion(
                cached.text, cached.prompt_tokens, cached.completion_tokens, cached.finish_reason, cached.endpoint
            )
        began = time.monotonic()
        completion = await self.teacher.achat(messages, sampling)
        stored = StoredResponse(
            completion.text,
            completion.finish_reason,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.endpoint,
        )
        request = {"messages": messages, "sampling": dataclasses.asdict(sampling)}
        self.ledger.put_response(cache_key, self.teacher_key, recipe, request, stored, time.monotonic() - began)
        return completion

    def questions_key(self, chunk: KeyedChunk, attempt: int) -> str:
        s = self.settings
        return stable_hash(
            "questions",
            self.version,
            self.teacher_key,
            chunk.key,
            s.questions_per_chunk,
            s.temperature,
            s.seed,
            attempt,
        )

    def answer_key(self, chunk: KeyedChunk, question: str) -> str:
        s = self.settings
        return stable_hash(
            "answer",
            self.version,
            self.teacher_key,
            chunk.key,
            question,
            s.temperature,
            s.max_answer_tokens,
            s.min_answer_words,
            self.system_prompt,
            s.seed,
        )

    def remember_existing_pairs(self, chunks: list[KeyedChunk]) -> None:
        wanted = {c.key for c in chunks}
        for item in self.ledger.items(STAGE, "qa", "ok"):
            if item.payload["chunk"] in wanted:
                self._seen_pairs.add(self._pair_key(item.payload["question"], item.payload["answer"]))

    @staticmethod
    def _pair_key(question: str, answer: str) -> str:
        return stable_hash(normalise(question), normalise(answer))

    def _fail(self, key: str, kind: str, chunk: KeyedChunk, exc: Exception, extra: dict) -> None:
        reason = f"teacher_error: {exc}" if str(exc) else f"teacher_error: {type(exc).__name__}"
        self.failures[type(exc).__name__] += 1
        payload = {"chunk": chunk.key, **extra}
        self.ledger.put_item(Item(key, self.run_id, STAGE, kind, "failed", payload, reason[:500]), [chunk.key])

    async def questions(self, chunk: KeyedChunk) -> tuple[list[str], list[str]]:
        """Up to questions_per_chunk distinct questions, asking again (new seed) while too few come back.

        Returns the questions and the keys of the ledger items they came from.
        """
        wanted = self.settings.questions_per_chunk
        questions: dict[str, str] = {}
        sources = []
        for attempt in range(self.settings.question_attempts):
            key = self.questions_key(chunk, attempt)
            sources.append(key)
            for question in await self._ask_questions(chunk, key, wanted - len(questions)):
                questions.setdefault(normalise(question), question)
            if len(questions) >= wanted:
                break
        return list(questions.values())[:wanted], sources

    async def _ask_questions(self, chunk: KeyedChunk, key: str, count: int) -> list[str]:
        stored = self.ledger.item(key)
        if stored is not None and stored.status != "failed":
            return stored.payload["questions"]
        values = {"business": self.business, "chunk": chunk.chunk.text, "count": count}
        messages: list[Message] = [
            {"role": "system", "content": self.prompts.render("questions.system", **values)},
            {"role": "user", "content": self.prompts.render("questions.user", **values)},
        ]
        try:
            completion = await self.ask("questions", messages, self._sampling(key, 48 * count))
        except Exception as exc:
            self._fail(key, "questions", chunk, exc, {"questions": []})
            return []
        questions = parse_questions(completion.text, count)
        payload = {
            "chunk": chunk.key,
            "raw": completion.text,
            "questions": questions,
            "usage": [completion.prompt_tokens, completion.completion_tokens],
        }
        status, reason = ("ok", None) if questions else ("rejected", "no_questions")
        self.ledger.put_item(Item(key, self.run_id, STAGE, "questions", status, payload, reason), [chunk.key])
        return questions

    async def answer(self, chunk: KeyedChunk, question: str, sources: list[str]) -> None:
        key = self.answer_key(chunk, question)
        if self.ledger.is_settled(key):
            return
        values = {"business": self.business, "chunk": chunk.chunk.text, "question": question}
        messages: list[Message] = [
            {"role": "system", "content": self.prompts.render("answer.system", **values)},
            {"role": "user", "content": self.prompts.render("answer.user", **values)},
        ]
        try:
            completion = await self.ask("answer", messages, self._sampling(key, self.settings.max_answer_tokens))
        except Exception as exc:
            self._fail(key, "qa", chunk, exc, {"doc": chunk.chunk.doc, "question": question, "usage": [0, 0]})
            return
        answer = completion.text.strip()
        reason = answer_problem(question, answer, completion.finish_reason, self.settings.min_answer_words)
        pair = self._pair_key(question, answer)
        if reason is None and pair in self._seen_pairs:
            reason = "duplicate"
        payload = {
            "chunk": chunk.key,
            "doc": chunk.chunk.doc,
            "question": question,
            "answer": answer,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
            "teacher": self.teacher_key,
            "teacher_messages": messages,
            "usage": [completion.prompt_tokens, completion.completion_tokens],
        }
        item = Item(key, self.run_id, STAGE, "qa", "ok" if reason is None else "rejected", payload, reason)
        if self.ledger.put_item(item, [chunk.key, *sources]) and reason is None:
            self._seen_pairs.add(pair)


def run(project: Project, console: Console) -> StageReport:
    started = time.monotonic()
    config = project.config
    chunks = document_chunks(project)
    splits = split_chunks([c.key for c in chunks], config.synth.heldout_fraction, config.synth.seed)
    prompts_version = Prompts(project.root).version(*PROMPT_NAMES)
    config_hash = stable_hash(
        config.synth.fingerprint(),
        teacher_id(config.teacher),
        prompts_version,
        config.project.resolved_system_prompt(),
    )
    inputs_hash = stable_hash(sorted(splits))
    run_id = f"synth-{stable_hash(config_hash, inputs_hash)[:12]}"
    ledger = project.ledger
    run = ledger.start_run(run_id, STAGE, config_hash, inputs_hash)
    if run.state == "done":
        return StageReport(STAGE, run_id, True, run.summary)

    teacher = open_teacher(config.teacher, project.root)
    synthesiser = _Synthesiser(project, run_id, teacher)
    synthesiser.remember_existing_pairs(chunks)
    asyncio.run(_generate(synthesiser, chunks, console))
    summary = _summarise(ledger, chunks, splits)
    if synthesiser.failures:
        reason, count = synthesiser.failures.most_common(1)[0]
        total = sum(synthesiser.failures.values())
        ledger.fail_run(run_id, f"{total} teacher requests failed")
        raise AlambicError(
            f"synth: {total} teacher requests failed for good (most often {reason}, {count}x); "
            "run again to retry them, finished items are kept"
        )
    ledger.finish_run(run_id, summary)
    return StageReport(STAGE, run_id, False, summary, time.monotonic() - started)


async def _generate(synth: _Synthesiser, chunks: list[KeyedChunk], console: Console) -> None:
    per_chunk = synth.settings.questions_per_chunk
    pending = iter(chunks)
    try:
        with progress_bar(console) as progress:
            task = progress.add_task("synth: questions + answers", total=len(chunks) * (1 + per_chunk))

            async def answer(chunk: KeyedChunk, question: str, sources: list[str]) -> None:
                await synth.answer(chunk, question, sources)
                progress.advance(task)

            async def worker() -> None:
                # Workers pull chunks one at a time, so memory stays flat however many chunks there are.
                for chunk in pending:
                    questions, sources = await synth.questions(chunk)
                    progress.advance(task, 1 + per_chunk - len(questions))
                    await asyncio.gather(*(answer(chunk, q, sources) for q in questions))

            workers = max(1, min(len(chunks), synth.teacher.parallel))
            await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        await synth.teacher.aclose()


def _summarise(ledger: Ledger, chunks: list[KeyedChunk], splits: dict[str, str]) -> dict:
    wanted = {c.key for c in chunks}
    counts: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    failed = 0
    tokens = [0, 0]
    for item in ledger.items(STAGE, "qa"):
        if item.payload["chunk"] not in wanted:
            continue
        tokens[0] += item.payload["usage"][0]
        tokens[1] += item.payload["usage"][1]
        if item.status == "ok":
            counts[splits[item.payload["chunk"]]] += 1
        elif item.status == "failed":
            failed += 1
        else:
            rejected[item.reason or "unknown"] += 1
    for item in ledger.items(STAGE, "questions"):
        if item.payload["chunk"] in wanted and item.status != "ok":
            if item.status == "failed":
                failed += 1
            else:
                rejected[item.reason or "unknown"] += 1
    return {
        "chunks": len(chunks),
        "splits": splits,
        "train_items": counts["train"],
        "heldout_items": counts["heldout"],
        "rejected": dict(rejected),
        "failed": failed,
        "teacher_tokens": {"prompt": tokens[0], "completion": tokens[1]},
    }
