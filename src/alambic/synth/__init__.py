"""synth: the teacher writes training conversations from the documents, by a mix of recipes."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from itertools import zip_longest
from pathlib import Path
from typing import Any

from rich.console import Console

from alambic.config import Config, PersonaSection
from alambic.dataset import reviewed_captures
from alambic.errors import AlambicError
from alambic.facts import KIND as FACT_KIND
from alambic.hashing import files_sha256, stable_hash
from alambic.models import Message, open_teacher, teacher_id
from alambic.persona import creator_replies, reply_messages
from alambic.project import Project
from alambic.prompts import Prompts
from alambic.results import RecipeResult, SynthResult
from alambic.stage import StageReport, progress_bar
from alambic.store import Item, Ledger
from alambic.synth.engine import STAGE, Engine, KeyedChunk
from alambic.synth.facts import FactRequest, write_facts
from alambic.synth.faq import KIND as FAQ_KIND
from alambic.synth.faq import record_faq_items
from alambic.synth.recipes import (
    Dialogue,
    EvolInstruct,
    Fill,
    GroundedQA,
    PersonaVoice,
    Recipe,
    Safety,
    SelfInstruct,
    fill,
    recipe_targets,
)
from alambic.synth.recipes.imports import KIND as IMPORT_KIND
from alambic.synth.recipes.imports import import_logs
from alambic.synth.selection import dataset_selection, recipe_selection


def document_chunks(project: Project) -> list[KeyedChunk]:
    """All chunks of the project's documents, recorded in the ledger with their lineage."""
    ledger, settings = project.ledger, project.config.synth
    keyed: list[list[KeyedChunk]] = []
    for document in (document for document in project.documents() if document.text):
        doc_key = document.key
        doc_payload = {
            "path": document.relpath,
            "chars": len(document.text),
            "converter": document.converter,
            "pages": len(document.pages),
            "unit": document.unit,
            "warnings": list(document.warnings),
        }
        batch: list[tuple[Item, list[str]]] = [(Item(doc_key, "-", STAGE, "document", "ok", doc_payload), [])]
        per_doc = []
        for chunk in document.chunks(settings.chunk_chars):
            key = stable_hash("chunk", doc_key, chunk.index, chunk.text)
            source = document.source(chunk)
            payload = {
                "doc": chunk.doc,
                "index": chunk.index,
                "text": chunk.text,
                "source": source.model_dump(mode="json"),
                "citation": source.citation,
            }
            batch.append((Item(key, "-", STAGE, "chunk", "ok", payload), [doc_key]))
            per_doc.append(KeyedChunk(key, chunk, citation=source.citation))
        ledger.put_items(batch)  # a document and its chunks in one transaction
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


def total_target(config: Config, chunks: int) -> int:
    """synth.target, or else the size of one pass of grounded-qa over the chunks, scaled up to the whole mix."""
    settings = config.synth
    if settings.target is not None:
        return settings.target
    weights = settings.recipes
    share = weights.get("grounded-qa", 0) / sum(weights.values())
    natural = chunks * settings.questions_per_chunk
    return max(1, round(natural / share)) if share else natural


def build_recipes(engine: Engine, project: Project, chunks: list[KeyedChunk], targets: dict[str, int]) -> list[Recipe]:
    """The recipes of the first phase (evol-instruct comes after, from their accepted items)."""
    makers = {
        "grounded-qa": lambda: GroundedQA(engine, chunks),
        "self-instruct": lambda: SelfInstruct(engine),
        "dialogue": lambda: Dialogue(engine, chunks),
        "persona-voice": lambda: PersonaVoice(engine, project.root),
        "safety": lambda: Safety(engine),
    }
    return [makers[name]() for name in targets if name in makers]


# The recipes whose items answer one question from one chunk: the ones with an answer fact.
FACT_RECIPE_KINDS = ("qa", "evol-instruct")


def run(project: Project, console: Console) -> StageReport:
    started = time.monotonic()
    config, ledger = project.config, project.ledger
    with console.status("reading documents (each new or changed file is converted once, then kept)"):
        chunks = document_chunks(project)
    splits = split_chunks([c.key for c in chunks], config.synth.heldout_fraction, config.synth.seed)
    chunks = [KeyedChunk(c.key, c.chunk, splits[c.key], c.citation) for c in chunks]
    targets = recipe_targets(config.synth.recipes, total_target(config, len(chunks)))
    prompts = Prompts(project.root)
    config_hash = stable_hash(
        config.synth.fingerprint(), teacher_id(config.teacher), prompts.fingerprint(), config.project.fingerprint()
    )
    import_digests = files_sha256(project.root, config.synth.import_paths)
    captures = reviewed_captures(ledger) if config.synth.captured else []
    captured = [[c.key, c.payload["messages"]] for c in captures]
    replies = own_replies(config.synth.persona, project.root)
    extra = [*([captured] if captures else []), *([replies] if replies else [])]
    inputs_hash = stable_hash(sorted(splits), import_digests, *extra)
    run_id = f"synth-{stable_hash(config_hash, inputs_hash)[:12]}"
    run = ledger.start_run(run_id, STAGE, config_hash, inputs_hash)
    if run.state == "done":
        return StageReport(STAGE, run_id, True, run.result(SynthResult))

    system_prompt = config.project.resolved_system_prompt()
    paths = config.synth.import_paths
    imported, import_fingerprint = import_logs(
        ledger, run_id, project.root, paths, import_digests, system_prompt, captures, replies
    )
    faq = record_faq_items(ledger, run_id, chunks, system_prompt) if config.synth.document_faq else None
    if config.scale.backend == "ray":
        from alambic.synth.distributed import synthesise_on_ray

        fills, failures = synthesise_on_ray(project, chunks, targets, run_id, console)
    else:
        fills, failures = _synthesise_locally(project, chunks, targets, prompts, run_id, console)
    facts: Counter[str] = Counter()
    if not failures:
        facts, failures = _write_facts_locally(project, fills, chunks, prompts, run_id, console)
    if failures:
        reason, count = failures.most_common(1)[0]
        total = sum(failures.values())
        ledger.fail_run(run_id, f"{total} teacher requests failed")
        raise AlambicError(
            f"synth: {total} teacher requests failed for good (most often {reason}, {count}x); "
            "run again to retry them, finished items are kept"
        )
    groups = len(paths) + bool(captures) + bool(replies)
    result = _summarise(ledger, run_id, fills, splits, imported, import_fingerprint, groups, faq)
    result.facts = dict(facts)
    ledger.finish_run(run_id, result, dataset_selection(ledger, result))
    return StageReport(STAGE, run_id, False, result, time.monotonic() - started)


def _synthesise_locally(
    project: Project, chunks: list[KeyedChunk], targets: dict[str, int], prompts: Prompts, run_id: str, console: Console
) -> tuple[list[Fill], Counter[str]]:
    config = project.config
    teacher = open_teacher(config.teacher, project.root, logprobs=config.synth.logprobs > 0)
    engine = Engine(config, project.ledger, prompts, teacher, run_id, chunks)
    try:
        return asyncio.run(_synthesise(engine, project, chunks, targets, console)), engine.failures
    finally:
        engine.close()


def _write_facts_locally(
    project: Project, fills: list[Fill], chunks: list[KeyedChunk], prompts: Prompts, run_id: str, console: Console
) -> tuple[Counter[str], Counter[str]]:
    """The answer fact of every selected item grounded in a chunk; (outcomes, teacher failures)."""
    by_key = {chunk.key: chunk for chunk in chunks}
    requests = []
    for chosen in fills:
        recipe = chosen.recipe
        if recipe.kind not in FACT_RECIPE_KINDS:
            continue
        for _, key, chunk_key in recipe_selection(
            project.ledger, recipe.kind, recipe.fingerprint, chosen.issued, chosen.target
        ):
            if chunk_key in by_key:
                item = project.ledger.item(key)
                assert item is not None
                requests.append(FactRequest(key, item.payload["question"], by_key[chunk_key]))
    if not requests:
        return Counter(), Counter()
    teacher = open_teacher(project.config.teacher, project.root)
    engine = Engine(project.config, project.ledger, prompts, teacher, run_id)

    async def facts() -> Counter[str]:
        try:
            with progress_bar(console) as progress:
                task = progress.add_task("synth: answer facts", total=len(requests))
                return await write_facts(engine, requests, lambda: progress.advance(task))
        finally:
            await engine.teacher.aclose()

    try:
        return asyncio.run(facts()), engine.failures
    finally:
        engine.close()


async def _synthesise(
    engine: Engine, project: Project, chunks: list[KeyedChunk], targets: dict[str, int], console: Console
) -> list[Fill]:
    """Every recipe's groups, on one event loop (the teacher's connections belong to it)."""
    try:
        fills = [Fill(recipe, targets[recipe.name]) for recipe in build_recipes(engine, project, chunks, targets)]
        await _generate(fills, engine, console, "synth")
        if "evol-instruct" in targets and not engine.failures:
            sources = _evolution_sources(engine.ledger, fills, chunks)
            if sources:
                evolve = Fill(EvolInstruct(engine, sources), targets["evol-instruct"])
                fills.append(evolve)
                await _generate([evolve], engine, console, "synth: evol-instruct")
        return fills
    finally:
        await engine.teacher.aclose()


async def _generate(fills: list[Fill], engine: Engine, console: Console, label: str) -> None:
    with progress_bar(console) as progress:
        task = progress.add_task(f"{label}: accepted items", total=sum(f.target for f in fills))

        def on_group(chosen: Fill, accepted: int) -> None:
            progress.update(task, completed=sum(min(f.accepted, f.target) for f in fills))

        # Twice as many groups as request slots: while one group waits for its items to reach the disk,
        # another's request keeps the slot busy. The teacher client still caps requests in flight.
        await fill(fills, 2 * engine.teacher.parallel, on_group)


def _evolution_sources(ledger: Ledger, fills: list[Fill], chunks: list[KeyedChunk]) -> list[tuple[str, str, Any]]:
    """Training questions that evol-instruct may rewrite: accepted, selected and never held out."""
    by_key = {c.key: c for c in chunks}
    sources = []
    for chosen in fills:
        if chosen.recipe.name not in ("grounded-qa", "self-instruct"):
            continue
        recipe = chosen.recipe
        for _, key, chunk_key in recipe_selection(
            ledger, recipe.kind, recipe.fingerprint, chosen.issued, chosen.target
        ):
            chunk = by_key.get(chunk_key) if chunk_key else None
            if chunk is not None and chunk.split != "train":
                continue
            item = ledger.item(key)
            assert item is not None
            sources.append((key, item.payload["question"], chunk))
    sources.sort(key=lambda source: source[0])
    return sources


def own_replies(persona: PersonaSection, project_root: Path) -> list[list[Message]]:
    """The creator's own replies that are not held out, as training conversations in the creator's voice."""
    return [
        [*reply_messages(persona.creator, reply.post, reply.comment), {"role": "assistant", "content": reply.reply}]
        for reply in creator_replies(persona, project_root)
        if not reply.heldout
    ]


def _summarise(
    ledger: Ledger,
    run_id: str,
    fills: list[Fill],
    splits: dict[str, str],
    imported: dict[str, int],
    import_fingerprint: str,
    files: int,
    faq: tuple[str, int] | None,
) -> SynthResult:
    recipes: dict[str, RecipeResult] = {}
    counts: Counter[str] = Counter()

    def add(name: str, kind: str, fingerprint: str, groups: int, target: int, accepted: int) -> None:
        rows = recipe_selection(ledger, kind, fingerprint, groups, target)
        recipe_splits = Counter(splits.get(chunk, "train") if chunk else "train" for _, _, chunk in rows)
        counts.update(recipe_splits)
        recipes[name] = RecipeResult(
            kind=kind,
            fingerprint=fingerprint,
            groups=groups,
            target=target,
            accepted=accepted,
            selected=len(rows),
            train=recipe_splits["train"],
            heldout=recipe_splits["heldout"],
        )

    if faq is not None and faq[1]:  # first: of an FAQ answer and a teacher item repeating it, curate drops the latter
        add(FAQ_KIND, FAQ_KIND, faq[0], 1, faq[1], faq[1])
    for chosen in fills:
        recipe = chosen.recipe
        add(recipe.name, recipe.kind, recipe.fingerprint, chosen.issued, chosen.target, chosen.accepted)
    if imported["ok"] or imported["rejected"]:
        counts["train"] += imported["ok"]
        recipes["import"] = RecipeResult(
            kind=IMPORT_KIND,
            fingerprint=import_fingerprint,
            groups=files,
            target=imported["ok"],
            accepted=imported["ok"],
            selected=imported["ok"],
            train=imported["ok"],
            heldout=0,
        )
    rejected: Counter[str] = Counter()
    tokens = [0, 0]
    for item in ledger.items(STAGE):
        if item.run_id != run_id:
            continue
        usage = item.payload.get("usage") or [0, 0]
        tokens[0] += usage[0]
        tokens[1] += usage[1]
        if item.status == "rejected" and item.kind != FACT_KIND:  # facts are counted apart, in `facts`
            rejected[(item.reason or "unknown").split(":")[0]] += 1
    return SynthResult(
        chunks=len(splits),
        splits=splits,
        recipes=recipes,
        train_items=counts["train"],
        heldout_items=counts["heldout"],
        rejected=dict(rejected),
        teacher_tokens={"prompt": tokens[0], "completion": tokens[1]},
    )
