"""The ledger's cost per durable item against raw sqlite3 doing the same durable inserts."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path

from alambic.store import Item, Ledger

N = 2000
PAYLOAD = {"question": "هل تشحنون إلى مصر؟ When do you roast?", "answer": "We roast on Tuesdays. " * 8}


def ledger_items_per_second(path: Path) -> float:
    with Ledger(path) as ledger:
        started = time.perf_counter()
        for i in range(N):
            ledger.put_item(Item(f"key-{i}", "run", "synth", "qa", "ok", PAYLOAD), parents=[f"chunk-{i % 50}"])
        return N / (time.perf_counter() - started)


def raw_sqlite_items_per_second(path: Path) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE items (key TEXT PRIMARY KEY, payload TEXT)")
    db.execute("CREATE TABLE lineage (child TEXT, parent TEXT, PRIMARY KEY (child, parent))")
    started = time.perf_counter()
    for i in range(N):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT OR IGNORE INTO items VALUES (?, ?)", (f"key-{i}", json.dumps(PAYLOAD, ensure_ascii=False)))
        db.execute("INSERT OR IGNORE INTO lineage VALUES (?, ?)", (f"key-{i}", f"chunk-{i % 50}"))
        db.execute("COMMIT")
    rate = N / (time.perf_counter() - started)
    db.close()
    return rate


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        ours = ledger_items_per_second(Path(tmp) / "ledger.sqlite")
        raw = raw_sqlite_items_per_second(Path(tmp) / "raw.sqlite")
    return [
        {
            "figure": "ledger-durable-items-vs-raw-sqlite",
            "value": ours,
            "unit": "items/s",
            "peer": "raw sqlite3, same durability",
            "peer_value": raw,
            "ratio": ours / raw,
            "goal": ">=0.8",
        }
    ]
