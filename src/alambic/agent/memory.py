"""The agent's memory: every turn of every conversation, by session id, in one SQLite file written ahead and
synced on each turn, so a killed server loses nothing a customer was answered."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from alambic.errors import AlambicError
from alambic.models import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY, session TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS turns_by_session ON turns (session, id);
CREATE TABLE IF NOT EXISTS handoffs (
    id INTEGER PRIMARY KEY, session TEXT NOT NULL, reason TEXT NOT NULL, question TEXT NOT NULL,
    ticket TEXT, created REAL NOT NULL);
"""


class Memory:
    """Conversations by session id. Safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise AlambicError(f"{path}: not a readable conversation store ({exc})") from exc
        self.lock = threading.Lock()

    def add(self, session: str, role: str, content: str, meta: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO turns (session, role, content, meta, created) VALUES (?, ?, ?, ?, ?)",
                (session, role, content, json.dumps(meta or {}, ensure_ascii=False), time.time()),
            )

    def history(self, session: str, turns: int, chars: int) -> list[Message]:
        """The session's last `turns` messages, oldest first, cut to the newest that fit in `chars`."""
        with self.lock:
            rows = self.db.execute(
                "SELECT role, content FROM turns WHERE session = ? ORDER BY id DESC LIMIT ?", (session, turns)
            ).fetchall()
        kept: list[Message] = []
        used = 0
        for role, content in rows:
            used += len(content)
            if used > chars:
                break
            kept.append({"role": role, "content": content})
        return kept[::-1]

    def record_handoff(self, session: str, reason: str, question: str, ticket: str | None) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO handoffs (session, reason, question, ticket, created) VALUES (?, ?, ?, ?, ?)",
                (session, reason, question, ticket, time.time()),
            )

    def handoffs(self, session: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT session, reason, question, ticket FROM handoffs"
        with self.lock:
            rows = self.db.execute(
                query + (" WHERE session = ? ORDER BY id" if session else " ORDER BY id"), (session,) if session else ()
            ).fetchall()
        return [dict(zip(("session", "reason", "question", "ticket"), row, strict=True)) for row in rows]

    def close(self) -> None:
        self.db.close()
