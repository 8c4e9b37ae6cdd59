"""curate: rule checks, decontamination, near-duplicate removal and an LLM judge over a synth run's items.

Every verdict is an item of its own (stage "curate"), so a rejected item keeps its reason in the ledger
and the dataset that distill reads leaves it out.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from alambic.config import CurateSection
from alambic.curate.checks import item_problem
from alambic.curate.dedup import MinHashDeduper, embedding_duplicates, ngrams
from alambic.curate.judge import Judge, Judgement, agreement
from alambic.dataset import FAQ_KIND, evaluation_rows, latest_synth_run
from alambic.errors import AlambicError
from alambic.facts import HANDOFF, answer_facts
from alambic.hashing import files_sha256, stable_hash
from alambic.models import teacher_id
from alambic.models.teacher import Teacher
from alambic.project import Project
from alambic.prompts import Prompts
from alambic.results import CurateResult, JudgeResult
from alambic.stage import StageReport, progress_bar
from alambic.store import Item, Ledger, Selected
from alambic.text import contains, script

STAGE = "curate"
JUDGE_PROMPTS = ("judge.system", "judge.user")
# The documents' own answers are what the judge would check others against: a teacher does not grade them.
UNJUDGED = frozenset({FAQ_KIND})


@dataclass
class Candidate:
    key: str
    kind: str
    split: str
    messages: list[dict[str, str]]
    chunk: str
    fact: str | None = None  # the checked answer fact, or "handoff", where synth wrote one

    @property
    def user_turns(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "user"]

    @property
    def answers(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "assistant"]

    @property
    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] != "system")


def run(project: Project, console: Console) -> StageReport:
    started = time.monotonic()
    config, ledger = project.config, project.ledger
    settings = config.curate
    synth_run = latest_synth_run(ledger)
    prompts = Prompts(project.root)
    judge_id = [teacher_id(config.teacher), prompts.version(*JUDGE_PROMPTS)] if settings.judge else None
    config_hash = stable_hash(settings.fingerprint(), judge_id, files_sha256(project.root, settings.eval_paths))
    selection = ledger.selection(synth_run.id)
    facts = answer_facts(ledger, prompts, [chosen.key for chosen in selection])
    # The facts join the inputs only when there are some, so that a curation made before facts stays done.
    run_id = f"curate-{stable_hash(config_hash, synth_run.id, *([facts] if facts else []))[:12]}"
    run = ledger.start_run(run_id, STAGE, config_hash, synth_run.id)
    if run.state == "done":
        return StageReport(STAGE, run_id, True, run.result(CurateResult))

    candidates = _candidates(ledger, selection, facts)
    reasons = _rule_and_duplicate_checks(candidates, _eval_texts(project, settings, candidates), settings, console)
    judged, verdicts = JudgeResult(enabled=False), {}
    if settings.judge:
        judged, verdicts = _judge(project, prompts, candidates, reasons, console)
    _record_verdicts(ledger, run_id, candidates, reasons, verdicts)
    counts = Counter(reason.split(":")[0] for reason in reasons.values())
    result = CurateResult(
        synth_run=synth_run.id,
        items=len(candidates),
        kept=len(candidates) - len(reasons),
        rejected=dict(counts),
        judge=judged,
    )
    ledger.finish_run(run_id, result)
    return StageReport(STAGE, run_id, False, result, time.monotonic() - started)


def _candidates(ledger: Ledger, selection: list[Selected], facts: dict[str, str]) -> list[Candidate]:
    """The synth run's selected items, held-out ones first (the evaluation set is never thinned)."""
    chunks = {item.key: item.payload["text"] for item in ledger.items("synth", "chunk")}
    candidates = []
    for chosen in selection:
        item = ledger.item(chosen.key)
        assert item is not None
        chunk = chunks.get(item.payload.get("chunk") or "", "")
        messages = item.payload["messages"]
        candidates.append(Candidate(chosen.key, chosen.kind, chosen.split, messages, chunk, facts.get(chosen.key)))
    candidates.sort(key=lambda c: c.split != "heldout")
    return candidates


def fact_missing(fact: str | None, answers: list[str]) -> bool:
    """True when an item has a checked fact that its (last) answer does not state."""
    return fact is not None and fact != HANDOFF and bool(answers) and not contains(answers[-1], fact)


def _eval_texts(project: Project, settings: CurateSection, candidates: list[Candidate]) -> list[str]:
    """The prompts of every evaluation set: the held-out items and each file in curate.eval_paths."""
    texts = [turn for c in candidates if c.split == "heldout" for turn in c.user_turns]
    for path, number, row in evaluation_rows(project.root, settings.eval_paths):
        texts += _prompts_of(row, path, number)
    return texts


def _prompts_of(row: Any, path: Path, number: int) -> list[str]:
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        return [m.get("content", "") for m in row["messages"] if m.get("role") == "user"]
    if isinstance(row, dict) and isinstance(row.get("question"), str):
        return [row["question"]]
    raise AlambicError(f"{path}:{number}: an evaluation row needs messages or a question")


def _rule_and_duplicate_checks(
    candidates: list[Candidate], eval_texts: list[str], settings: CurateSection, console: Console
) -> dict[str, str]:
    """{key: reason} for every item that fails a rule, leaks into an evaluation set, or repeats another."""
    reasons: dict[str, str] = {}
    eval_grams = ngrams(eval_texts, settings.decontam_ngram)
    deduper = MinHashDeduper(settings.minhash_threshold, settings.minhash_perm, settings.shingle_words)
    for candidate in candidates:
        if problem := item_problem(candidate.kind, candidate.user_turns, candidate.answers, settings):
            reasons[candidate.key] = problem
        elif settings.fact_check and candidate.split == "train" and fact_missing(candidate.fact, candidate.answers):
            reasons[candidate.key] = "fact_missing"
        elif candidate.split == "train" and ngrams(candidate.user_turns, settings.decontam_ngram) & eval_grams:
            reasons[candidate.key] = "eval_leak"
        elif original := deduper.duplicate_of(candidate.key, candidate.text):
            reasons[candidate.key] = f"near_duplicate: {original}"
    # The bundled MiniLM was trained on English: other scripts all look alike to it (Arabic pairs score
    # ~0.75-0.8 however unrelated), so they are left to MinHash.
    remaining = [c for c in candidates if c.key not in reasons and script(c.text) == "LATIN"]
    if remaining:
        from alambic.models.embedded import minilm_dir
        from alambic.models.embeddings import Embedder

        with console.status("curate: embedding items for near-duplicate search"):
            vectors = Embedder(minilm_dir()).embed([c.text for c in remaining])
        splits = {c.key: c.split for c in remaining}
        for key, original in embedding_duplicates(
            [c.key for c in remaining], vectors, settings.embedding_threshold
        ).items():
            leak = splits[key] == "train" and splits[original] == "heldout"
            reasons[key] = "eval_leak" if leak else f"near_duplicate: {original}"
    return reasons


def _judge(
    project: Project,
    prompts: Prompts,
    candidates: list[Candidate],
    reasons: dict[str, str],
    console: Console,
) -> tuple[JudgeResult, dict[str, Judgement]]:
    """Judge the training items that passed the checks; returns the judge's summary and its verdicts."""
    settings = project.config.curate
    todo = [
        (c.key, c.messages, c.chunk, _reasked(c.key, settings.judge_reask_fraction))
        for c in candidates
        if c.split == "train" and c.key not in reasons and c.kind not in UNJUDGED
    ]
    config = project.config
    teacher = Teacher.open(config.teacher, project.root, project.ledger, config.synth.temperature)
    judge = Judge(teacher, prompts, config.project.business)

    async def judge_all() -> dict[str, list[Judgement]]:
        try:
            with progress_bar(console) as progress:
                task = progress.add_task("curate: judging", total=len(todo))
                return await judge.judge_all(todo, lambda: progress.advance(task))
        finally:
            await teacher.aclose()

    try:
        judgements = asyncio.run(judge_all())
    except Exception as exc:
        raise AlambicError(f"curate: the judge's teacher failed ({exc}); run again, judged items are kept") from exc
    self_agreement = agreement(judgements, settings.judge_min_score)
    measured = self_agreement["kappa"]
    applied = measured is None or measured >= settings.judge_min_agreement
    verdicts = {key: results[0] for key, results in judgements.items()}
    if applied:
        for key, judgement in verdicts.items():
            if judgement.score is None:
                reasons[key] = "judge_unparseable"
            elif judgement.score < settings.judge_min_score:
                reasons[key] = "judge_low_score"
    scores = [j.score for j in verdicts.values() if j.score is not None]
    result = JudgeResult(
        enabled=True,
        judged=len(verdicts),
        mean_score=round(sum(scores) / len(scores), 3) if scores else None,
        self_agreement=self_agreement,
        applied=applied,
    )
    return result, verdicts


def _reasked(key: str, fraction: float) -> bool:
    """Whether this item is judged twice: a fixed pseudo-random share of the items."""
    return int(stable_hash("reask", key)[:8], 16) / 2**32 < fraction


def _record_verdicts(
    ledger: Ledger, run_id: str, candidates: list[Candidate], reasons: dict[str, str], verdicts: dict[str, Judgement]
) -> None:
    batch = []
    for candidate in candidates:
        reason = reasons.get(candidate.key)
        judgement = verdicts.get(candidate.key)
        payload = {
            "item": candidate.key,
            "kind": candidate.kind,
            "split": candidate.split,
            "judge": None
            if judgement is None
            else {"score": judgement.score, **judgement.scores, "why": judgement.reason},
        }
        key = stable_hash("verdict", run_id, candidate.key)
        status = "ok" if reason is None else "rejected"
        batch.append((Item(key, run_id, STAGE, "verdict", status, payload, reason), [candidate.key]))
    for start in range(0, len(batch), 1000):
        ledger.put_items(batch[start : start + 1000])
