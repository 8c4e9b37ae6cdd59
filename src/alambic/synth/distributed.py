"""synth's generation on Ray: waves of recipe groups as a Ray Data pipeline, each worker with its own teacher
client and its own SQLite shard, merged into the project's ledger by the driver between waves.

A group asks the same requests wherever it runs, and a recipe keeps the first `target` accepted items in
group order, so the selection is the local backend's. Workers read the main ledger (the response cache and
settled items) without locks: the driver checkpoints it before a wave and writes it only between waves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from alambic.config import Config, ScaleSection, TeacherSection
from alambic.errors import AlambicError
from alambic.models import Completion, Message, Sampling, open_teacher
from alambic.project import Project
from alambic.prompts import Prompts
from alambic.stage import progress_bar
from alambic.store import Item, Ledger
from alambic.store.ledger import StoredResponse, connect, transaction
from alambic.synth.engine import Engine, KeyedChunk
from alambic.synth.recipes import EvolInstruct, Fill, Recipe

Source = tuple[str, str, KeyedChunk | None]  # evol-instruct's (item key, question, chunk)
ITEM_COLUMNS = "key, run_id, stage, kind, status, reason, payload, created_at"
RESPONSE_COLUMNS = (
    "key, model, endpoint, recipe, request, text, finish_reason, prompt_tokens, completion_tokens, seconds, created_at"
)
WAIT_FOR_WORKERS_S = 600
MISSING_RAY = "scale.backend 'ray' needs the ray extra: pip install 'alambic[ray]'"


def synthesise_on_ray(
    project: Project, chunks: list[KeyedChunk], targets: dict[str, int], run_id: str, console: Console
) -> tuple[list[Fill], Counter[str]]:
    """Both phases of synth (the recipes, then evol-instruct from their items), in waves on Ray."""
    from alambic.synth import _evolution_sources, build_recipes

    ray = import_ray()
    shards = project.state_dir / "shards"
    merge_shards(project.ledger.path, sorted(shards.glob("*.sqlite")))  # what a crashed run left behind
    engine = Engine(project.config, project.ledger, Prompts(project.root), _PlanningOnly(), run_id)
    engine.close()  # the driver's recipes only plan and select; the workers' engines write
    started = connect_ray(ray, project.config.scale)
    try:
        pipeline = Pipeline(project, chunks, run_id, shards, ray.remote(num_cpus=0)(Slots).remote())
        fills = [Fill(recipe, targets[recipe.name]) for recipe in build_recipes(engine, project, chunks, targets)]
        pipeline.run(fills, None, console, "synth")
        if "evol-instruct" in targets and not pipeline.failures:
            sources = _evolution_sources(project.ledger, fills, chunks)
            if sources:
                evolve = Fill(EvolInstruct(engine, sources), targets["evol-instruct"])
                fills.append(evolve)
                pipeline.run([evolve], sources, console, "synth: evol-instruct")
        return fills, pipeline.failures
    finally:
        if started:
            ray.shutdown()


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise AlambicError(MISSING_RAY) from exc
    return ray


def connect_ray(ray: Any, scale: ScaleSection) -> bool:
    """Join the cluster at scale.address, or start a local Ray; True if this call started it."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # synth draws its own; Ray Data's log stays in the session's folder
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)
    # Every worker up before the first batch: the work spreads over all replicas, and a cluster too small for
    # scale.workers fails with Ray's timeout error instead of waiting for ever.
    context.wait_for_min_actors_s = WAIT_FOR_WORKERS_S
    if ray.is_initialized():
        return False
    if scale.address is None:
        ray.init(include_dashboard=False, configure_logging=False)
        return True
    try:
        ray.init(address=scale.address, configure_logging=False)
    except ConnectionError as exc:
        raise AlambicError(f"scale.address {scale.address!r}: no Ray cluster answers there ({exc})") from exc
    return True


class Slots:
    """Numbers the workers as they start: worker n takes its share of the replicas and shard n."""

    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        self.next += 1
        return self.next - 1


class Pipeline:
    """The driver's side: hands out waves of groups, merges the workers' shards, counts what they accepted."""

    def __init__(self, project: Project, chunks: list[KeyedChunk], run_id: str, shards: Path, slots: Any) -> None:
        self.project, self.chunks, self.run_id, self.shards, self.slots = project, chunks, run_id, shards, slots
        self.failures: Counter[str] = Counter()

    def run(self, fills: list[Fill], sources: list[Source] | None, console: Console, label: str) -> None:
        with progress_bar(console) as progress:
            task = progress.add_task(f"{label}: accepted items", total=sum(f.target for f in fills))
            while wave := plan_wave(fills, self.project.config.scale.wave_groups):
                self.run_wave(wave, sources)
                progress.update(task, completed=sum(min(f.accepted, f.target) for f in fills))

    def run_wave(self, wave: list[tuple[Fill, range]], sources: list[Source] | None) -> None:
        import ray

        scale = self.project.config.scale
        checkpoint(self.project.ledger.path)  # the workers read the main ledger's file, not its WAL
        rows = interleave([[{"recipe": f.recipe.name, "group": g} for g in groups] for f, groups in wave])
        kwargs = {
            "config": self.project.config,
            "root": str(self.project.root),
            "main": str(self.project.ledger.path),
            "shards": str(self.shards),
            "run_id": self.run_id,
            "chunks": self.chunks,
            "recipes": sorted({f.recipe.name for f, _ in wave}),
            "sources": sources,
            "slots": self.slots,
        }
        dataset = ray.data.from_items(rows).map_batches(
            GroupWorker,
            fn_constructor_kwargs=kwargs,
            compute=ray.data.ActorPoolStrategy(size=scale.workers, max_tasks_in_flight_per_actor=1),
            batch_size=max(1, math.ceil(len(rows) / (2 * scale.workers))),
        )
        try:
            results = dataset.take_all()
        except Exception as exc:
            if (error := worker_error(exc)) is None:
                raise
            raise error from None
        merge_shards(self.project.ledger.path, sorted(self.shards.glob(f"{self.run_id}-*.sqlite")))
        self.count(wave, results)

    def count(self, wave: list[tuple[Fill, range]], results: list[dict[str, Any]]) -> None:
        accepted = {(row["recipe"], int(row["group"])): int(row["accepted"]) for row in results}
        for row in results:
            self.failures.update(json.loads(row["failures"]))
        for chosen, groups in wave:
            chosen.finished += len(groups)
            chosen.accepted += sum(accepted[chosen.recipe.name, g] for g in groups)


def worker_error(exc: Exception) -> AlambicError | None:
    """A worker's own error (a teacher that does not answer, say), which Ray hands back as traceback text."""
    marker = f"{AlambicError.__module__}.{AlambicError.__name__}: "
    found = [line.removeprefix(marker) for line in str(exc).splitlines() if line.startswith(marker)]
    return AlambicError(found[-1]) if found else None


def plan_wave(fills: list[Fill], capacity: int) -> list[tuple[Fill, range]]:
    """The next groups of each recipe below its target: about as many as its acceptance says it still needs."""
    wave = []
    for chosen in sorted((f for f in fills if f.wants_more()), key=lambda f: f.accepted / f.target):
        needed = math.ceil((chosen.target - chosen.accepted) / chosen.expected_per_group())
        count = min(needed, chosen.budget() - chosen.issued, capacity)
        if count <= 0:
            continue
        wave.append((chosen, range(chosen.issued, chosen.issued + count)))
        chosen.issued += count
        capacity -= count
    return wave


def interleave(lists: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Round-robin over the recipes, so that every batch mixes cheap and costly groups."""
    longest = max((len(rows) for rows in lists), default=0)
    return [rows[i] for i in range(longest) for rows in lists if i < len(rows)]


class GroupWorker:
    """A Ray Data actor: its own teacher client (its share of the replicas) and its own shard of the ledger."""

    def __init__(
        self,
        config: Config,
        root: str,
        main: str,
        shards: str,
        run_id: str,
        chunks: list[KeyedChunk],
        recipes: list[str],
        sources: list[Source] | None,
        slots: Any,
    ) -> None:
        import ray

        slot = ray.get(slots.take.remote())
        self.config, self.root, self.main, self.run_id = config, Path(root), Path(main), run_id
        self.shard = Path(shards) / f"{run_id}-{slot:05d}.sqlite"
        self.chunks, self.names, self.sources = chunks, recipes, sources
        self.prompts = Prompts(self.root)
        section = worker_teacher(config.teacher, slot, config.scale.workers)
        self.teacher = open_teacher(section, self.root, logprobs=config.synth.logprobs > 0)
        self.loop = asyncio.new_event_loop()  # the teacher's connections belong to one loop, kept across batches

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        jobs = list(zip(batch["recipe"].tolist(), batch["group"].tolist(), strict=True))
        accepted, failures = self.loop.run_until_complete(self.run(jobs))
        return {
            "recipe": np.array([name for name, _ in jobs], dtype=object),
            "group": np.array([group for _, group in jobs], dtype=np.int64),
            "accepted": np.array(accepted, dtype=np.int64),
            "failures": np.array([json.dumps(failures)] + ["{}"] * (len(jobs) - 1), dtype=object),
        }

    async def run(self, jobs: list[tuple[str, int]]) -> tuple[list[int], dict[str, int]]:
        # Shard and main ledger are open only during a batch: between waves the driver merges and writes.
        ledger = ShardLedger(self.shard, self.main)
        engine = Engine(self.config, ledger, self.prompts, self.teacher, self.run_id, self.chunks)
        try:
            recipes = {recipe.name: recipe for recipe in self.recipes(engine)}
            slots = asyncio.Semaphore(2 * self.teacher.parallel)  # as the local fill: two groups per request slot

            async def one(name: str, group: int) -> int:
                async with slots:
                    return await recipes[name].run_group(group)

            accepted = await asyncio.gather(*(one(name, group) for name, group in jobs))
            return list(accepted), dict(engine.failures)
        finally:
            engine.close()
            ledger.close()

    def recipes(self, engine: Engine) -> list[Recipe]:
        from alambic.synth import build_recipes

        if self.sources is not None:
            return [EvolInstruct(engine, self.sources)]
        project = Project(self.root, self.config)
        return build_recipes(engine, project, self.chunks, dict.fromkeys(self.names, 1))


def worker_teacher(section: TeacherSection, slot: int, workers: int) -> TeacherSection:
    """Worker `slot`'s teacher: its share of the replicas (all of them if there are fewer than workers) and
    of the concurrency, so that the cluster keeps as many requests in flight as one local process would."""
    urls = section.base_urls()
    mine = urls[slot % workers :: workers] if len(urls) >= workers else urls
    update: dict[str, Any] = {"concurrency": max(1, math.ceil(section.concurrency / workers))}
    if mine:
        update["base_url"] = mine
    return section.model_copy(update=update)


class ShardLedger(Ledger):
    """A worker's shard, which its engine writes, read together with the main ledger: a response or a settled
    item that either holds is not asked for again."""

    def __init__(self, shard: Path, main: Path) -> None:
        super().__init__(shard)
        self.main = ReadOnlyLedger(main)

    def close(self) -> None:
        self.main.close()
        super().close()

    def item(self, key: str) -> Item | None:
        own = super().item(key)
        if own is not None and own.status != "failed":
            return own
        return self.main.item(key) or own

    def response(self, key: str) -> StoredResponse | None:
        return super().response(key) or self.main.response(key)

    def logprobs(self, key: str) -> list[dict[str, Any]] | None:
        own = super().logprobs(key)
        return own if own is not None else self.main.logprobs(key)


class ReadOnlyLedger(Ledger):
    """The main ledger's file, read without locks or WAL (which a worker on another machine could not share);
    the driver checkpoints the WAL into it before a wave and writes nothing during one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        self._lock = threading.Lock()


def checkpoint(path: Path) -> None:
    db = connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def merge_shards(main: Path, shards: Iterable[Path]) -> int:
    """Copy the shards' rows into the main ledger and delete the shards; returns how many items were stored.

    Idempotent: responses, logprobs and lineage are kept once, and an item replaces only a failed one with
    its key, as Ledger.put_item does. A shard is deleted only once its rows are committed, so a crash
    between the two merges it again, to the same result.
    """
    stored = 0
    db = connect(main)
    try:
        for shard in shards:
            stored += merge_shard(db, shard)
            for path in (shard, shard.with_name(shard.name + "-wal"), shard.with_name(shard.name + "-shm")):
                path.unlink(missing_ok=True)
    finally:
        db.close()
    return stored


def merge_shard(db: sqlite3.Connection, shard: Path) -> int:
    db.execute("ATTACH DATABASE ? AS shard", (str(shard),))
    try:
        return transaction(db, _merge_attached)
    finally:
        db.execute("DETACH DATABASE shard")


def _merge_attached(db: sqlite3.Connection) -> int:
    before = db.total_changes
    # `WHERE true` lets SQLite parse an upsert whose rows come from a SELECT.
    db.execute(
        f"INSERT INTO main.items ({ITEM_COLUMNS}) SELECT {ITEM_COLUMNS} FROM shard.items WHERE true "
        "ON CONFLICT(key) DO UPDATE SET run_id = excluded.run_id, status = excluded.status, "
        "reason = excluded.reason, payload = excluded.payload, created_at = excluded.created_at "
        "WHERE items.status = 'failed'"
    )
    stored = db.total_changes - before
    db.execute("INSERT OR IGNORE INTO main.lineage SELECT child, parent FROM shard.lineage")
    db.execute(f"INSERT OR IGNORE INTO main.responses SELECT {RESPONSE_COLUMNS} FROM shard.responses")
    db.execute("INSERT OR IGNORE INTO main.logprobs SELECT key, tokens, data FROM shard.logprobs")
    return stored


class _PlanningOnly:
    """The driver's stand-in teacher: its recipes plan and select, and never ask."""

    name = "planning-only"
    parallel = 1

    async def achat(self, messages: list[Message], sampling: Sampling) -> Completion:
        raise AssertionError("the driver's recipes do not ask the teacher")

    async def aclose(self) -> None:
        return None
