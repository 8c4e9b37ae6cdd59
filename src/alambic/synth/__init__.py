"""synth: the teacher writes customer questions about each chunk of the documents and answers them."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest

from rich.console import Console

from alambic.errors import AlambicError
from alambic.hashing import stable_hash
from alambic.models import ChatModel, Message, Sampling, open_teacher, teacher_id
from alambic.project import Project
from alambic.stage import StageReport, progress_bar
from alambic.store import Item, Ledger
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
    def __init__(self, project: Project, run_id: str, teacher: ChatModel, splits: dict[str, str]) -> None:
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
        self.splits = splits
        self.errors: Counter[str] = Counter()
        self._seen_pairs: set[str] = set()
        self._lock = threading.Lock()

    def _sampling(self, key: str, max_tokens: int) -> Sampling:
        # A seed derived from the request makes a re-run after a crash ask for exactly the same thing.
        return Sampling(temperature=self.settings.temperature, max_tokens=max_tokens, seed=int(key[:8], 16) % (2**31))

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

    def questions(self, chunk: KeyedChunk) -> tuple[list[str], list[str]]:
        """Up to questions_per_chunk distinct questions, asking again (new seed) while too few come back.

        Returns the questions and the keys of the ledger items they came from.
        """
        wanted = self.settings.questions_per_chunk
        questions: dict[str, str] = {}
        sources = []
        for attempt in range(self.settings.question_attempts):
            key = self.questions_key(chunk, attempt)
            sources.append(key)
            for question in self._ask_questions(chunk, key, wanted - len(questions)):
                questions.setdefault(normalise(question), question)
            if len(questions) >= wanted:
                break
        return list(questions.values())[:wanted], sources

    def _ask_questions(self, chunk: KeyedChunk, key: str, count: int) -> list[str]:
        stored = self.ledger.item(key)
        if stored is not None:
            return stored.payload["questions"]
        values = {"business": self.business, "chunk": chunk.chunk.text, "count": count}
        messages: list[Message] = [
            {"role": "system", "content": self.prompts.render("questions.system", **values)},
            {"role": "user", "content": self.prompts.render("questions.user", **values)},
        ]
        completion = self.teacher.chat(messages, self._sampling(key, 48 * count))
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

    def answer(self, chunk: KeyedChunk, question: str, sources: list[str]) -> None:
        key = self.answer_key(chunk, question)
        if self.ledger.has_item(key):
            return
        values = {"business": self.business, "chunk": chunk.chunk.text, "question": question}
        messages: list[Message] = [
            {"role": "system", "content": self.prompts.render("answer.system", **values)},
            {"role": "user", "content": self.prompts.render("answer.user", **values)},
        ]
        completion = self.teacher.chat(messages, self._sampling(key, self.settings.max_answer_tokens))
        answer = completion.text.strip()
        reason = answer_problem(question, answer, completion.finish_reason, self.settings.min_answer_words)
        with self._lock:
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
    try:
        synthesiser = _Synthesiser(project, run_id, teacher, splits)
        synthesiser.remember_existing_pairs(chunks)
        _generate(synthesiser, chunks, console)
    finally:
        teacher.close()
    if synthesiser.errors:
        reason, count = synthesiser.errors.most_common(1)[0]
        total = sum(synthesiser.errors.values())
        ledger.fail_run(run_id, f"{total} teacher requests failed")
        raise AlambicError(
            f"synth: {total} teacher requests failed (most often: {reason}, {count}x); "
            "run again to retry them, finished items are kept"
        )
    summary = _summarise(ledger, chunks, splits)
    ledger.finish_run(run_id, summary)
    return StageReport(STAGE, run_id, False, summary, time.monotonic() - started)


def _generate(synth: _Synthesiser, chunks: list[KeyedChunk], console: Console) -> None:
    per_chunk = synth.settings.questions_per_chunk
    with progress_bar(console) as progress, ThreadPoolExecutor(max(1, synth.teacher.parallel)) as pool:
        task = progress.add_task("synth: questions + answers", total=len(chunks) * (1 + per_chunk))

        def guarded(work: Callable[..., None], *args: object) -> None:
            try:
                work(*args)
            except AlambicError:
                raise
            except Exception as exc:
                with synth._lock:
                    synth.errors[type(exc).__name__] += 1
            finally:
                progress.advance(task)

        def ask_questions(chunk: KeyedChunk) -> list[Future[None]]:
            questions, sources = synth.questions(chunk)
            progress.advance(task, per_chunk - len(questions))
            return [pool.submit(guarded, synth.answer, chunk, question, sources) for question in questions]

        question_futures = [pool.submit(ask_questions, chunk) for chunk in chunks]
        for future in question_futures:
            try:
                answer_futures = future.result()
            except AlambicError:
                raise
            except Exception as exc:
                synth.errors[type(exc).__name__] += 1
                progress.advance(task, 1 + per_chunk)
                continue
            progress.advance(task)
            for answer_future in answer_futures:
                answer_future.result()


def _summarise(ledger: Ledger, chunks: list[KeyedChunk], splits: dict[str, str]) -> dict:
    wanted = {c.key for c in chunks}
    counts: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    tokens = [0, 0]
    for item in ledger.items(STAGE, "qa"):
        if item.payload["chunk"] not in wanted:
            continue
        tokens[0] += item.payload["usage"][0]
        tokens[1] += item.payload["usage"][1]
        if item.status == "ok":
            counts[splits[item.payload["chunk"]]] += 1
        else:
            rejected[item.reason or "unknown"] += 1
    for item in ledger.items(STAGE, "questions", "rejected"):
        if item.payload["chunk"] in wanted:
            rejected[item.reason or "unknown"] += 1
    return {
        "chunks": len(chunks),
        "splits": splits,
        "train_items": counts["train"],
        "heldout_items": counts["heldout"],
        "rejected": dict(rejected),
        "teacher_tokens": {"prompt": tokens[0], "completion": tokens[1]},
    }
