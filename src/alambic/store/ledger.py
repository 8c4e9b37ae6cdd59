"""The ledger: one SQLite database (WAL) per project holding runs, items, artifacts and lineage.

Every write is its own transaction, so a process killed at any point leaves every item it
reported as stored on disk, and nothing half-written.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from alambic.errors import AlambicError

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)

MIGRATIONS: list[tuple[str, str]] = [
    (
        "initial schema: runs, items, artifacts, lineage",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            stage TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            inputs_hash TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
            started_at REAL NOT NULL,
            finished_at REAL,
            summary TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE items (
            key TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            stage TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'rejected', 'failed')),
            reason TEXT,
            payload TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX items_by_kind ON items (stage, kind, status);
        CREATE TABLE artifacts (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT,
            bytes INTEGER,
            meta TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        );
        CREATE TABLE lineage (
            child TEXT NOT NULL,
            parent TEXT NOT NULL,
            PRIMARY KEY (child, parent)
        );
        CREATE INDEX lineage_by_parent ON lineage (parent);
        """,
    ),
    (
        "teacher response cache with usage per endpoint and recipe",
        """
        CREATE TABLE responses (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            recipe TEXT NOT NULL,
            request TEXT NOT NULL,
            text TEXT NOT NULL,
            finish_reason TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            seconds REAL NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX responses_by_usage ON responses (endpoint, recipe);
        """,
    ),
    (
        "teacher top-k logprobs of a response, zlib-compressed JSON",
        """
        CREATE TABLE logprobs (
            key TEXT PRIMARY KEY,
            tokens INTEGER NOT NULL,
            data BLOB NOT NULL
        );
        """,
    ),
    (
        "the items a run selected (synth: its dataset), in order, with their split",
        """
        CREATE TABLE selections (
            run_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            key TEXT NOT NULL,
            kind TEXT NOT NULL,
            split TEXT NOT NULL,
            PRIMARY KEY (run_id, position)
        );
        CREATE TABLE unrecorded_selections (run_id TEXT PRIMARY KEY);
        INSERT INTO unrecorded_selections SELECT id FROM runs WHERE state = 'done';
        """,
    ),
    (
        "the served API's keys, stored as their SHA-256 only, with per-key limits and scopes",
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            sha256 TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL,
            limits TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            revoked_at REAL
        );
        """,
    ),
    (
        "when a stage last chose each run: a finished run a stage reuses is the latest again",
        """
        ALTER TABLE runs ADD COLUMN chosen_at REAL;
        UPDATE runs SET chosen_at = finished_at WHERE state = 'done';
        """,
    ),
]


@dataclass
class Run:
    id: str
    stage: str
    config_hash: str
    inputs_hash: str
    state: str
    started_at: float
    finished_at: float | None
    summary: dict[str, Any]
    chosen_at: float | None = None

    @property
    def last_chosen(self) -> float:
        """When a stage last finished or reused this run: the latest chosen is the one the next stage builds on."""
        return self.chosen_at or self.finished_at or self.started_at

    def result(self, model: type[R]) -> R:
        """The run's summary as the stage's typed result."""
        try:
            return model.model_validate(self.summary)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise AlambicError(
                f"run {self.id}: its summary is not a {model.__name__} ({where}: {first['msg']})"
            ) from None


@dataclass(frozen=True)
class Selected:
    """An item a run selected, and the split it belongs to."""

    key: str
    kind: str
    split: str


@dataclass
class Item:
    key: str
    run_id: str
    stage: str
    kind: str
    status: str
    payload: dict[str, Any]
    reason: str | None = None
    created_at: float = field(default_factory=time.time)


@dataclass
class StoredResponse:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    endpoint: str
    seconds: float = 0.0  # how long the teacher took to answer


@dataclass
class ApiKey:
    """A key of the served API: its id is shown in logs, its secret only once, when it is made."""

    id: str
    name: str
    sha256: str
    scopes: list[str]
    limits: dict[str, int]
    created_at: float
    revoked_at: float | None = None


@dataclass
class Artifact:
    id: str
    run_id: str
    kind: str
    path: str
    sha256: str | None
    bytes: int | None
    meta: dict[str, Any]
    created_at: float


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(path)
        self._lock = threading.Lock()
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            current = self.schema_version
            if current > len(MIGRATIONS):
                raise AlambicError(
                    f"{self.path}: ledger schema v{current} is newer than this alambic (v{len(MIGRATIONS)})"
                )
            for version, (description, script) in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, description, time.time())
                    )
                    self._db.execute("COMMIT")
                except Exception:
                    self._db.execute("ROLLBACK")
                    raise

    # runs -----------------------------------------------------------------
    def start_run(self, run_id: str, stage: str, config_hash: str, inputs_hash: str) -> Run:
        """Open (or reopen, after a crash) the run with this id; a finished one is chosen again, as it is reused."""
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (id, stage, config_hash, inputs_hash, state, started_at) "
                "VALUES (?, ?, ?, ?, 'running', ?) "
                "ON CONFLICT(id) DO UPDATE SET state = CASE WHEN state = 'done' THEN 'done' ELSE 'running' END, "
                "chosen_at = CASE WHEN state = 'done' THEN excluded.started_at ELSE chosen_at END",
                (run_id, stage, config_hash, inputs_hash, time.time()),
            )
        run = self.run(run_id)
        assert run is not None
        return run

    def finish_run(self, run_id: str, result: BaseModel, selected: Sequence[Selected] = ()) -> None:
        """Mark the run done with its result, and what it selected, in one transaction."""
        rows = [(run_id, position, s.key, s.kind, s.split) for position, s in enumerate(selected)]
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM selections WHERE run_id = ?", (run_id,))
            db.executemany("INSERT INTO selections VALUES (?, ?, ?, ?, ?)", rows)
            db.execute(
                "UPDATE runs SET state = 'done', finished_at = ?, chosen_at = ?, summary = ? WHERE id = ?",
                (now, now, result.model_dump_json(), run_id),
            )

        with self._lock:
            transaction(self._db, write)

    def unrecorded_selections(self) -> list[Run]:
        """The runs an older alambic finished before runs recorded what they selected."""
        rows = self._db.execute(
            "SELECT runs.* FROM runs JOIN unrecorded_selections ON runs.id = unrecorded_selections.run_id"
        )
        return [_run(row) for row in rows]

    def put_selection(self, run_id: str, selected: Sequence[Selected]) -> None:
        """Record what a run an older alambic finished had selected."""
        rows = [(run_id, position, s.key, s.kind, s.split) for position, s in enumerate(selected)]

        def write(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO selections VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("DELETE FROM unrecorded_selections WHERE run_id = ?", (run_id,))

        with self._lock:
            transaction(self._db, write)

    def selection(self, run_id: str) -> list[Selected]:
        """What the run selected, in order."""
        rows = self._db.execute("SELECT key, kind, split FROM selections WHERE run_id = ? ORDER BY position", (run_id,))
        return [Selected(*row) for row in rows]

    def fail_run(self, run_id: str, reason: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET state = 'failed', finished_at = ?, summary = ? WHERE id = ? AND state != 'done'",
                (time.time(), json.dumps({"error": reason}, ensure_ascii=False), run_id),
            )

    def run(self, run_id: str) -> Run | None:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def runs(self) -> list[Run]:
        return [_run(row) for row in self._db.execute("SELECT * FROM runs ORDER BY started_at")]

    def latest_done(self, stage: str) -> Run | None:
        row = self._db.execute(
            "SELECT * FROM runs WHERE stage = ? AND state = 'done' "
            "ORDER BY COALESCE(chosen_at, finished_at) DESC LIMIT 1",
            (stage,),
        ).fetchone()
        return _run(row) if row else None

    # items ----------------------------------------------------------------
    def put_item(self, item: Item, parents: Sequence[str] = ()) -> bool:
        """Store an item unless a settled one has its key (a failed one is replaced). True if stored."""
        return self.put_items([(item, parents)]) == 1

    def put_items(self, batch: Sequence[tuple[Item, Sequence[str]]]) -> int:
        """Store several items in one transaction (see put_item); returns how many were stored."""
        with self._lock:
            return transaction(self._db, lambda db: insert_items(db, batch))

    def item(self, key: str) -> Item | None:
        row = self._db.execute("SELECT * FROM items WHERE key = ?", (key,)).fetchone()
        return _item(row) if row else None

    def is_settled(self, key: str) -> bool:
        """True if an item with this key is stored as ok or rejected (failed items are to be retried)."""
        row = self._db.execute("SELECT 1 FROM items WHERE key = ? AND status != 'failed'", (key,)).fetchone()
        return row is not None

    # API keys ---------------------------------------------------------------
    def put_api_key(self, key: ApiKey) -> None:
        row = (key.id, key.name, key.sha256, json.dumps(key.scopes), json.dumps(key.limits), key.created_at, None)
        with self._lock:
            try:
                transaction(self._db, lambda db: db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)", row))
            except sqlite3.IntegrityError:
                raise AlambicError(f"key name {key.name!r}: a key with this name exists") from None

    def api_keys(self) -> list[ApiKey]:
        return [_api_key(row) for row in self._db.execute("SELECT * FROM api_keys ORDER BY created_at")]

    def api_key_by_hash(self, sha256: str) -> ApiKey | None:
        row = self._db.execute("SELECT * FROM api_keys WHERE sha256 = ?", (sha256,)).fetchone()
        return _api_key(row) if row else None

    def revoke_api_key(self, name: str) -> bool:
        """Revoke the key with this name (or id); False if there is none, or it is revoked already."""
        statement = "UPDATE api_keys SET revoked_at = ? WHERE (name = ? OR id = ?) AND revoked_at IS NULL"
        with self._lock:
            cursor = transaction(self._db, lambda db: db.execute(statement, (time.time(), name, name)))
        return cursor.rowcount == 1

    # teacher responses ----------------------------------------------------------
    def response(self, key: str) -> StoredResponse | None:
        row = self._db.execute(
            "SELECT text, finish_reason, prompt_tokens, completion_tokens, endpoint, seconds "
            "FROM responses WHERE key = ?",
            (key,),
        ).fetchone()
        return StoredResponse(*row) if row else None

    def put_response(
        self,
        key: str,
        model: str,
        recipe: str,
        request: dict[str, Any],
        response: StoredResponse,
        seconds: float,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> None:
        with self._lock:
            transaction(
                self._db, lambda db: insert_response(db, key, model, recipe, request, response, seconds, logprobs)
            )

    def logprobs(self, key: str) -> list[dict[str, Any]] | None:
        """The teacher's per-token logprobs of a stored response, if they were asked for."""
        row = self._db.execute("SELECT data FROM logprobs WHERE key = ?", (key,)).fetchone()
        return json.loads(zlib.decompress(row[0])) if row else None

    def usage(self) -> list[tuple[str, str, int, int, int]]:
        """(endpoint, recipe, requests, prompt tokens, completion tokens) of every paid teacher response."""
        return self._db.execute(
            "SELECT endpoint, recipe, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM responses "
            "GROUP BY endpoint, recipe ORDER BY endpoint, recipe"
        ).fetchall()

    def items(self, stage: str | None = None, kind: str | None = None, status: str | None = None) -> Iterator[Item]:
        clauses, args = [], []
        for column, value in (("stage", stage), ("kind", kind), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # Rows stream from the cursor, so reading a million items never holds them all in memory.
        for row in self._db.execute(f"SELECT * FROM items{where} ORDER BY created_at, key", args):
            yield _item(row)

    def item_counts(self) -> list[tuple[str, str, str, str | None, int]]:
        """(stage, kind, status, reason, count) rows."""
        return self._db.execute(
            "SELECT stage, kind, status, reason, COUNT(*) FROM items "
            "GROUP BY stage, kind, status, reason ORDER BY stage, kind, status, reason"
        ).fetchall()

    # artifacts and lineage ------------------------------------------------------
    def add_artifact(self, artifact: Artifact, parents: Sequence[str] = ()) -> None:
        row = (
            artifact.id,
            artifact.run_id,
            artifact.kind,
            artifact.path,
            artifact.sha256,
            artifact.bytes,
            json.dumps(artifact.meta, ensure_ascii=False),
            artifact.created_at,
        )

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            db.executemany("INSERT OR IGNORE INTO lineage VALUES (?, ?)", [(artifact.id, p) for p in parents])

        with self._lock:
            transaction(self._db, write)

    def artifact(self, artifact_id: str) -> Artifact | None:
        row = self._db.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        return _artifact(row) if row else None

    def artifacts(self, kind: str | None = None, run_id: str | None = None) -> list[Artifact]:
        clauses, args = [], []
        for column, value in (("kind", kind), ("run_id", run_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT * FROM artifacts{where} ORDER BY created_at", args).fetchall()
        return [_artifact(row) for row in rows]

    def parents(self, child: str) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT parent FROM lineage WHERE child = ?", (child,))]

    def ancestors(self, child: str) -> set[str]:
        rows = self._db.execute(
            "WITH RECURSIVE up(node) AS (SELECT parent FROM lineage WHERE child = ? "
            "UNION SELECT lineage.parent FROM lineage JOIN up ON lineage.child = up.node) SELECT node FROM up",
            (child,),
        )
        return {row[0] for row in rows}

    def lineage_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM lineage").fetchone()[0])


def _run(row: tuple) -> Run:
    return Run(*row[:7], summary=json.loads(row[7]), chosen_at=row[8])


def _item(row: tuple) -> Item:
    key, run_id, stage, kind, status, reason, payload, created_at = row
    return Item(key, run_id, stage, kind, status, json.loads(payload), reason, created_at)


def _api_key(row: tuple) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), row[5], row[6])


def _artifact(row: tuple) -> Artifact:
    return Artifact(*row[:6], meta=json.loads(row[6]), created_at=row[7])


def connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as exc:
        raise AlambicError(f"{path}: not a readable alambic ledger ({exc})") from exc
    return db


def transaction(db: sqlite3.Connection, write: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = write(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return result


def insert_items(db: sqlite3.Connection, batch: Sequence[tuple[Item, Sequence[str]]]) -> int:
    """Insert items, replacing only failed ones with the same key; returns how many were stored."""
    stored = 0
    for item, parents in batch:
        cursor = db.execute(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
            "run_id = excluded.run_id, status = excluded.status, reason = excluded.reason, "
            "payload = excluded.payload, created_at = excluded.created_at WHERE items.status = 'failed'",
            (
                item.key,
                item.run_id,
                item.stage,
                item.kind,
                item.status,
                item.reason,
                json.dumps(item.payload, ensure_ascii=False),
                item.created_at,
            ),
        )
        stored += cursor.rowcount
        db.executemany("INSERT OR IGNORE INTO lineage VALUES (?, ?)", [(item.key, parent) for parent in parents])
    return stored


def insert_response(
    db: sqlite3.Connection,
    key: str,
    model: str,
    recipe: str,
    request: dict[str, Any],
    response: StoredResponse,
    seconds: float,
    logprobs: list[dict[str, Any]] | None,
) -> None:
    db.execute(
        "INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key,
            model,
            response.endpoint,
            recipe,
            json.dumps(request, ensure_ascii=False),
            response.text,
            response.finish_reason,
            response.prompt_tokens,
            response.completion_tokens,
            seconds,
            time.time(),
        ),
    )
    if logprobs is not None:
        blob = zlib.compress(json.dumps(logprobs, ensure_ascii=False).encode("utf-8"))
        db.execute("INSERT OR IGNORE INTO logprobs VALUES (?, ?, ?)", (key, len(logprobs), blob))


class GroupCommitWriter:
    """Ledger writes from many coroutines, committed together by one thread.

    Each caller resumes only once its write is on disk, as with Ledger's own writes, but one commit (one
    fsync) covers every write that queued while the previous commit ran, and the event loop never waits
    for the disk.
    """

    def __init__(self, path: Path) -> None:
        self._db = connect(path)
        self._queue: queue.SimpleQueue[tuple[Callable, asyncio.Future, asyncio.AbstractEventLoop] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    async def write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((operation, future, loop))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._db.close()

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            stop = False
            while not self._queue.empty():
                if (entry := self._queue.get()) is None:
                    stop = True
                    break
                batch.append(entry)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list) -> None:
        try:
            results = transaction(self._db, lambda db: [operation(db) for operation, _, _ in batch])
        except Exception:
            # One bad write must not sink the others: redo them one by one, each with its own outcome.
            for operation, future, loop in batch:
                try:
                    result = transaction(self._db, operation)
                except Exception as exc:
                    loop.call_soon_threadsafe(_settle, future, None, exc)
                else:
                    loop.call_soon_threadsafe(_settle, future, result, None)
            return
        for (_, future, loop), result in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_settle, future, result, None)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
